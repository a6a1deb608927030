"""One server measured under load: warmed up, then a streamed load at each concurrency (TTFT, TTFO, tokens/s, the
CPU each process group used), then the notebook's own questions. `python -m benchmark` and benchmark.speculative
measure each of their servers this way.

    with servers.bare_vllm(...) as endpoint:
        row = measure_server(lambda: nullcontext(endpoint), "bare vLLM", Load(model, prompts), tokenizer)
"""

import asyncio
from dataclasses import dataclass

from harness import report, stats
from harness.config import MODEL_ID, NOTEBOOK_QUESTIONS
from harness.load import run_load, session, stream_chat

PER_REQUEST = ("status", "ttft", "ttfr", "ttfo", "itl", "e2e", "reasoning_tokens", "answer_tokens")


@dataclass
class Load:
    """What each server gets: `repeats` runs of requests[i] streamed requests at concurrency[i], each at most
    max_tokens long (extra_body: e.g. {"ignore_eos": True}), after a warm-up of warmup_tokens (default max_tokens)."""

    model: str
    prompts: list[str]
    concurrency: list[int]
    requests: list[int]
    repeats: int = 3
    max_tokens: int = 400
    extra_body: dict | None = None
    warmup_tokens: int | None = None


def run_concurrency(base_url, load, prompts, concurrency, tokenizer, label):
    """load.repeats runs at one concurrency; the summaries, the raw results and one streamed timeline."""
    runs, raw = [], []
    for repeat in range(load.repeats):
        cpu_before = stats.cpu_seconds_by_group()
        results, wall = asyncio.run(
            run_load(
                base_url,
                load.model,
                prompts,
                concurrency,
                load.max_tokens,
                f"{label} c={concurrency} #{repeat + 1}",
                load.extra_body,
            )
        )
        summary = stats.summarize(results, wall, tokenizer)
        summary["cpu_cores"] = stats.cores_busy(cpu_before, stats.cpu_seconds_by_group(), wall)
        runs.append({"concurrency": concurrency, "repeat": repeat, **summary})
        raw += results
        print(
            f"{label:38} c={concurrency:<3} TTFT p50 {report.ms(summary['ttft_s']['p50']):>7}  "
            f"first answer p50 {report.ms(summary['ttfo_s']['p50']):>7}  "
            f"{summary['output_tokens_per_s']:7.0f} tok/s  ok {summary['ok']}/{summary['requests']}"
        )
    return runs, raw


def notebook_questions(base_url, model, tokenizer):
    """Each question the notebook asks, streamed alone and without a token limit, as the notebook sends it."""

    async def ask_each():
        async with session(1, timeout_s=600) as client:
            return {
                name: await stream_chat(client, base_url, model, question, None)
                for name, question in NOTEBOOK_QUESTIONS.items()
            }

    results = asyncio.run(ask_each())
    return {name: {key: stats.count_tokens(r, tokenizer)[key] for key in PER_REQUEST} for name, r in results.items()}


def measure_server(start, name, load, tokenizer):
    """Start one server, warm it up, run the load at each concurrency and ask the notebook's questions; stop it."""
    with start() as (base_url, cold_start):
        if cold_start is not None:
            print(f"{name}: first answer {cold_start:.1f}s after start")
        # Warm up at the highest concurrency, so that no batch size is seen for the first time while measuring.
        top = max(load.concurrency)
        warmup_tokens = load.warmup_tokens or load.max_tokens
        asyncio.run(
            run_load(base_url, load.model, load.prompts[:top], top, warmup_tokens, f"{name} warm-up", load.extra_body)
        )
        runs, boxes, timeline = [], {}, None
        for concurrency, count in zip(load.concurrency, load.requests):
            more_runs, raw = run_concurrency(base_url, load, load.prompts[:count], concurrency, tokenizer, name)
            runs += more_runs
            boxes[str(concurrency)] = stats.box(r["ttfo"] for r in raw)
            timeline = timeline or raw[0]["chunks"]
        questions = notebook_questions(base_url, load.model, tokenizer) if load.model == MODEL_ID else {}
    return {
        "cold_start_s": cold_start,
        "runs": runs,
        "ttfo_box_s": boxes,
        "timeline": timeline,
        "notebook_questions": questions,
    }


def rounded(value, digits=5):
    """Floats to 5 decimals (10 µs for seconds): the results stay small enough to read in a review."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item, digits) for item in value]
    return value
