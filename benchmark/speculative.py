"""Speculative decoding for the small model: each setting next to no speculation, the engine otherwise the same.

    python -m benchmark.speculative --config serve_tiny_reasoner_gpu.yaml --out benchmark/results/speculative_gpu.json
    python -m benchmark.speculative --server serve --only none ngram4     # the tutorial's deployment (direct streaming)

Each setting starts its own server (bare vLLM, or Ray Serve LLM) with the config's engine_kwargs plus its
speculative_config and gets harness.measure's measure_server (TTFT, TTFO, tokens/s), vLLM's spec-decode counters
(acceptance), and the evaluation questions asked greedily, whose answers are compared byte for byte with no
speculation's (asked twice there: what batching alone changes). Results merge into --out by setting.
"""

import argparse
import asyncio
import copy
import hashlib
import json
import re
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

from harness import servers
from harness.config import CPU_CONFIG, ROOT, engine_cli_args, engine_env, llm_config
from harness.load import BROKEN, default_prompts
from harness.measure import Load, measure_server, rounded
from harness.results import machine
from tiny_reasoner import tasks
from tiny_reasoner.evaluate import ask_all

# Setting name -> engine_kwargs.speculative_config (None: no speculation). ngram (prompt lookup) needs no draft model:
# it proposes the tokens that followed the last 2-4 tokens' earlier occurrence in the prompt or output. vLLM turns
# async scheduling off for it; ngram_gpu proposes the same way on the GPU and keeps async scheduling. Both fall back
# from vLLM's V2 model runner to V1: "none-v1" and "none-sync" are each of those alone, without speculation.
SPECULATIVE = (
    {"none": None, "none-v1": None, "none-sync": None}
    | {
        f"ngram{k}": {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
        for k in (2, 4, 8)
    }
    | {
        f"ngram_gpu{k}": {
            "method": "ngram_gpu",
            "num_speculative_tokens": k,
            "prompt_lookup_max": 4,
            "prompt_lookup_min": 2,
        }
        for k in (4, 8)
    }
)
SETTING_ENGINE_KWARGS = {"none-sync": {"async_scheduling": False}}  # a setting's engine arguments beyond the config's
SETTING_ENV = {"none-v1": {"VLLM_USE_V2_MODEL_RUNNER": "0"}}  # and its environment for the engine
METRICS_PORT = 8085  # Ray's metrics export, where a Serve engine's vllm: counters appear
COUNTER = re.compile(r"^\S*spec_decode_num_(drafts|draft_tokens|accepted_tokens)(?:_total)?(?:\{[^}]*\})? (\S+)$")


@dataclass
class Settings:
    config: Path = CPU_CONFIG
    server: str = "bare"  # "bare": vLLM's own OpenAI server; "serve": the tutorial's Ray Serve LLM, direct streaming
    only: list[str] = field(default_factory=lambda: list(SPECULATIVE))
    concurrency: list[int] = field(default_factory=lambda: [1, 16])
    requests: list[int] = field(default_factory=lambda: [16, 32])
    repeats: int = 2
    max_tokens: int = 400
    letters: int = 300  # held-out letter questions of the evaluation set (with all its sums and other questions)
    out: Path = ROOT / "bench_results" / "speculative.json"


def spec_counters(url, server):
    """vLLM's spec-decode counters summed over their labels; Ray's export lags by its 1 s report interval."""
    time.sleep(3 if server == "serve" else 0)
    found = {"drafts": 0.0, "draft_tokens": 0.0, "accepted_tokens": 0.0}
    for match in filter(None, map(COUNTER.match, httpx.get(url, timeout=30).text.splitlines())):
        found[match[1]] += float(match[2])
    return found


def acceptance(before, after):
    """Mean acceptance length (1 + accepted per draft, as vLLM logs it) and the share of draft tokens accepted."""
    delta = {key: after[key] - before[key] for key in before}
    length = 1 + delta["accepted_tokens"] / delta["drafts"] if delta["drafts"] else None
    rate = delta["accepted_tokens"] / delta["draft_tokens"] if delta["draft_tokens"] else None
    return {**delta, "mean_acceptance_length": length, "acceptance_rate": rate}


@contextmanager
def start(settings, config, spec, log, extra_env=None):
    """One server with `spec` (or none); yields (base URL, cold start s, metrics URL); always stops it."""
    model = llm_config(config)["model_loading_config"]
    extra_env = extra_env or {}
    if settings.server == "bare":
        args = engine_cli_args(config) + (["--speculative-config", json.dumps(spec)] if spec else [])
        with servers.bare_vllm(
            ROOT / model["model_source"], model["model_id"], args, log, env=engine_env(config) | extra_env
        ) as u:
            url, cold = u
            yield url, cold, url.removesuffix("/v1") + "/metrics"
        return
    config = copy.deepcopy(config)  # the engine's arguments plus this setting's speculative_config
    llm_config(config)["engine_kwargs"] |= {"speculative_config": spec} if spec else {}
    cluster = servers.RayCluster({"RAY_metrics_report_interval_ms": "1000", **extra_env})
    started = time.time()
    try:
        cluster.start(f"--metrics-export-port={METRICS_PORT}")
        cluster.deploy(config, model=model["model_id"])
        yield servers.SERVE_URL, time.time() - started, f"http://127.0.0.1:{METRICS_PORT}/metrics"
    finally:
        cluster.stop()


def answer_hashes(base_url, model, items):
    """A short hash of each greedy answer (reasoning and content), 16 questions at a time; how many were correct."""
    results = asyncio.run(ask_all(base_url, items, True, model=model, concurrency=16))
    hashes = [hashlib.sha256(f"{r['reasoning']}\0{r['content']}".encode()).hexdigest()[:16] for r in results]
    return hashes, sum(tasks.answer_correct(r, r["content"]) for r in results)


def measure(settings, name, config, tokenizer):
    spec, model = SPECULATIVE[name], llm_config(config)["model_loading_config"]["model_id"]
    config = copy.deepcopy(config)
    llm_config(config)["engine_kwargs"] |= SETTING_ENGINE_KWARGS.get(name, {})
    load = Load(
        model,
        default_prompts(max(settings.requests)),
        settings.concurrency,
        settings.requests,
        settings.repeats,
        settings.max_tokens,
    )
    items = tasks.held_out_letter_prompts(settings.letters) + tasks.sum_prompts() + tasks.held_out_other_prompts()
    log = settings.out.parent / f"speculative_{settings.server}_{name}.log"
    with start(settings, config, spec, log, SETTING_ENV.get(name)) as (url, cold, metrics_url):
        before = spec_counters(metrics_url, settings.server)
        # measure_server's own start is the server already running here; it warms up, loads, asks the notebook.
        row = measure_server(lambda: nullcontext((url, cold)), name, load, tokenizer)
        middle = spec_counters(metrics_url, settings.server)
        row["acceptance_load"] = acceptance(before, middle)
        hashes, correct = answer_hashes(url, model, items)
        row["acceptance_answers"] = acceptance(middle, spec_counters(metrics_url, settings.server))
        row["answers"] = {"questions": len(items), "correct": correct, "hashes": hashes}
        if name == "none":  # the same questions again: how many answers batching alone leaves byte-identical
            again = answer_hashes(url, model, items)[0]
            row["answers"]["identical_on_second_ask"] = sum(map(str.__eq__, hashes, again))
    row.pop("timeline", None)
    added = {"env": SETTING_ENV.get(name, {}), "engine_kwargs_added": SETTING_ENGINE_KWARGS.get(name, {})}
    return {"speculative_config": spec, **added, "server": settings.server, "machine": machine(), **row}


def summary(row, concurrency):
    """Medians over the repeats of each run's numbers: one disturbed repeat does not move them."""
    runs = [run for run in row["runs"] if run["concurrency"] == concurrency]
    picks = {"ttfo_p50_s": ("ttfo_s", "p50"), "ttfo_p90_s": ("ttfo_s", "p90"), "ttft_p50_s": ("ttft_s", "p50")}
    numbers = {name: statistics.median(run[m][q] for run in runs) for name, (m, q) in picks.items()}
    return numbers | {"output_tokens_per_s": statistics.median(run["output_tokens_per_s"] for run in runs)}


def run(settings):
    from transformers import AutoTokenizer  # slow to import: not for --help

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tiny_reasoner")
    config = yaml.safe_load(Path(settings.config).read_text())
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(settings.out.read_text()) if settings.out.exists() else {"settings": {}, "rows": {}}
    result["settings"][settings.server] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    result["settings"][settings.server]["config"] = config
    for name in settings.only:
        key = f"{settings.server}: {name}"
        try:
            result["rows"][key] = measure(settings, name, config, tokenizer)
        except (RuntimeError, TimeoutError, *BROKEN) as error:  # the next setting still runs
            result["rows"][key] = {"speculative_config": SPECULATIVE[name], "error": str(error)[-2000:]}
        compare(result)
        settings.out.write_text(json.dumps(rounded(result), indent=1))  # after each setting: a cut-off run keeps it
    print_table(result)
    return result


def compare(result):
    """Each row's summary, its answers against its server's no-speculation answers, and TTFO against that row."""
    for row in (row for row in result["rows"].values() if "runs" in row):
        row["summary"] = {str(c): summary(row, c) for c in sorted({run["concurrency"] for run in row["runs"]})}
        base = result["rows"].get(f"{row['server']}: none", {})
        if "answers" in base:
            same = zip(row["answers"]["hashes"], base["answers"]["hashes"])
            row["answers"]["identical_to_none"] = sum(a == b for a, b in same)
        for c, numbers in row["summary"].items():
            if c in base.get("summary", {}):
                numbers["ttfo_p50_vs_none"] = numbers["ttfo_p50_s"] / base["summary"][c]["ttfo_p50_s"]


def print_table(result):
    print("setting            c  TTFO p50   p90  TTFT p50  tok/s  vs none  acc.len  acc.rate  identical")
    for key, row in result["rows"].items():
        acc, answers = row.get("acceptance_load", {}), row.get("answers", {})
        for c, s in row.get("summary", {"-": None}).items():
            if s is None:  # a setting whose server failed
                print(f"{key:17} failed: {row.get('error', '')[:300]}")
                continue
            ms = {name: s[name] * 1e3 for name in ("ttfo_p50_s", "ttfo_p90_s", "ttft_p50_s")}
            print(
                f"{key:17} {c:>3} {ms['ttfo_p50_s']:7.1f}ms {ms['ttfo_p90_s']:5.1f} {ms['ttft_p50_s']:7.1f}ms"
                f" {s['output_tokens_per_s']:6.0f} {s.get('ttfo_p50_vs_none', 1):8.2f}"
                f" {acc['mean_acceptance_length'] or 1:8.2f} {acc['acceptance_rate'] or 0:9.1%}"
                f"  {answers.get('identical_to_none', '-')}/{answers['questions']}"
            )


def label(row):
    spec, env, kwargs = row["speculative_config"], row.get("env") or {}, row.get("engine_kwargs_added") or {}
    if spec:
        return f"`{spec['method']}`, {spec['num_speculative_tokens']} tokens"
    changed = [f"`{k}={v}`" for k, v in env.items()] + [f"`{k}: {v}`" for k, v in kwargs.items()]
    return "none" + (f", {', '.join(changed)}" if changed else "")


def table(result):
    """The README's table of a results file: TTFO against its own no-speculation row, tokens per engine step (1 +
    accepted per draft) and the time of one step at 1 stream (tokens per step / output tokens per second)."""
    lines = [
        "| speculation | TTFO p50 / p90, 1 stream | TTFO p50, 16 streams | output tokens/s, 1 / 16 streams "
        "| tokens per step (drafts accepted) | ms per step, 1 stream | answers as without |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in (row for row in result["rows"].values() if "summary" in row):
        one, many, acc = row["summary"]["1"], row["summary"]["16"], row["acceptance_load"]
        per_step = acc["mean_acceptance_length"] or 1
        base = label(row) == "none"
        ratio = {c: "" if base else f" ({n['ttfo_p50_vs_none']:.2f}×)" for c, n in (("1", one), ("16", many))}
        accepted = "–" if not row["speculative_config"] else f"{per_step:.2f} ({acc['acceptance_rate']:.0%})"
        answers = row["answers"]
        same = answers.get("identical_on_second_ask") if base else answers["identical_to_none"]
        lines.append(
            f"| {label(row)} | {one['ttfo_p50_s'] * 1e3:.0f} / {one['ttfo_p90_s'] * 1e3:.0f} ms{ratio['1']} "
            f"| {many['ttfo_p50_s'] * 1e3:.0f} ms{ratio['16']} "
            f"| {one['output_tokens_per_s']:,.0f} / {many['output_tokens_per_s']:,.0f} | {accepted} "
            f"| {per_step / one['output_tokens_per_s'] * 1e3:.2f} | {same} of {answers['questions']} |"
        )
    return "\n".join(lines)


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Settings()
    parser.add_argument("--config", type=Path, default=default.config)
    parser.add_argument("--server", choices=["bare", "serve"], default=default.server)
    parser.add_argument("--only", nargs="*", choices=list(SPECULATIVE), default=default.only)
    for name in ("letters", "repeats", "max_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(default, name))
    parser.add_argument("--out", type=Path, default=default.out)
    run(Settings(**vars(parser.parse_args())))


if __name__ == "__main__":
    main()
