"""A reasoning-aware serving benchmark for any OpenAI-compatible endpoint, and a side-by-side mode that compares the
tutorial's Ray Serve LLM deployment with bare vLLM on the same model and the same load.

    python benchmark.py --base-url http://127.0.0.1:8000/v1 --model tiny-reasoner     # an endpoint that is running
    python benchmark.py --side-by-side                                                 # starts and stops each server

For reasoning models the moment that matters is when the reader first sees the *answer*, not the first token:
every streamed request records the time to its first token of any kind, to its first reasoning token and to its
first answer token, and counts reasoning and answer tokens with the model's tokenizer (vLLM reports
`usage.reasoning_tokens` as 0 when the chat template opens `<think>` in the prompt, as QwQ's does).
Results go to bench_results/ as JSON and as a PNG plot.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from tiny_reasoner import tasks  # noqa: E402

OUT = ROOT / "bench_results"


def default_prompts(count, seed=7):
    """The small model's own questions: letter counting and sums, interleaved."""
    letters = [item["prompt"] for item in tasks.held_out_letter_prompts(count, seed=seed)]
    sums = [item["prompt"] for item in tasks.sum_prompts()]
    return [letters[i // 2] if i % 2 == 0 else sums[(i * 37) % len(sums)] for i in range(count)]


async def one_request(client, base_url, model, prompt, max_tokens):
    """Stream one chat completion and time its reasoning and its answer."""
    started = time.perf_counter()
    first = first_reasoning = first_answer = None
    reasoning, answer, chunk_times, status = [], [], [], None
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": max_tokens, "temperature": 0}
    async with client.stream("POST", f"{base_url}/chat/completions", json=body) as reply:
        status = reply.status_code
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            delta = choices[0].get("delta") or {}
            now = time.perf_counter() - started
            text_r = delta.get("reasoning") or delta.get("reasoning_content")
            text_a = delta.get("content")
            if text_r or text_a:
                first = first if first is not None else now
                chunk_times.append((now, "reasoning" if text_r else "answer"))
            if text_r:
                first_reasoning = first_reasoning if first_reasoning is not None else now
                reasoning.append(text_r)
            if text_a:
                first_answer = first_answer if first_answer is not None else now
                answer.append(text_a)
    return {"status": status, "ttft": first, "ttfr": first_reasoning, "ttfa": first_answer,
            "e2e": time.perf_counter() - started, "reasoning": "".join(reasoning), "answer": "".join(answer),
            "chunks": chunk_times}


async def run_load(base_url, model, prompts, concurrency, max_tokens, label):
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(prompts), desc=label, unit="req", leave=False)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def guarded(prompt):
            async with limit:
                result = await one_request(client, base_url, model, prompt, max_tokens)
            bar.update()
            return result

        started = time.perf_counter()
        results = await asyncio.gather(*(guarded(p) for p in prompts))
        wall = time.perf_counter() - started
    bar.close()
    return results, wall


def percentiles(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


def summarize(results, wall, tokenizer):
    for r in results:
        r["reasoning_tokens"] = len(tokenizer.encode(r["reasoning"], add_special_tokens=False))
        r["answer_tokens"] = len(tokenizer.encode(r["answer"], add_special_tokens=False))
        tokens = r["reasoning_tokens"] + r["answer_tokens"]
        r["itl"] = (r["e2e"] - r["ttft"]) / (tokens - 1) if r["ttft"] is not None and tokens > 1 else None
    output_tokens = sum(r["reasoning_tokens"] + r["answer_tokens"] for r in results)
    return {
        "requests": len(results), "ok": sum(r["status"] == 200 for r in results), "wall_s": wall,
        "request_throughput": len(results) / wall, "output_tokens_per_s": output_tokens / wall,
        **{f"{metric}_s": percentiles(r[metric] for r in results) for metric in ("ttft", "ttfr", "ttfa", "itl", "e2e")},
        "reasoning_tokens_mean": sum(r["reasoning_tokens"] for r in results) / len(results),
        "answer_tokens_mean": sum(r["answer_tokens"] for r in results) / len(results),
    }


def benchmark(base_url, model, prompts, concurrencies, repeats, max_tokens, tokenizer, label):
    """Warm up, then run each concurrency `repeats` times; return the summaries and one streamed timeline."""
    asyncio.run(run_load(base_url, model, prompts[:2], 1, max_tokens, f"{label} warm-up"))
    runs, timeline = [], None
    for concurrency in concurrencies:
        for repeat in range(repeats):
            results, wall = asyncio.run(run_load(base_url, model, prompts, concurrency, max_tokens,
                                                 f"{label} c={concurrency} #{repeat + 1}"))
            summary = summarize(results, wall, tokenizer)
            runs.append({"concurrency": concurrency, "repeat": repeat, **summary,
                         "ttfa_all_s": [r["ttfa"] for r in results]})
            timeline = timeline or results[0]["chunks"]
            print(f"{label:38} c={concurrency:<3} TTFT p50 {summary['ttft_s']['p50'] * 1000:7.1f} ms  "
                  f"first answer p50 {summary['ttfa_s']['p50'] * 1000:7.1f} ms  "
                  f"{summary['output_tokens_per_s']:7.0f} tok/s  ok {summary['ok']}/{summary['requests']}")
    return runs, timeline


# --- side by side ------------------------------------------------------------------------------------------------

def first_answer_after(base_url, model, started, timeout=600):
    """Seconds from `started` until the model answers a real request."""
    while time.time() - started < timeout:
        try:
            reply = httpx.post(f"{base_url}/chat/completions", timeout=30, json={
                "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
            if reply.status_code == 200:
                return time.time() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base_url} did not answer within {timeout}s")


@contextmanager
def bare_vllm():
    from tiny_reasoner.evaluate import vllm_server

    started = time.time()
    with vllm_server(ROOT / "tiny_reasoner", log_path=OUT / "bare_vllm.log") as base_url:
        yield base_url, time.time() - started


def stop_ray():
    # A plain `ray stop` first: it lets the replicas stop their vLLM engines, which `--force` alone would orphan.
    for command in (["ray", "stop"], ["ray", "stop", "--force"]):
        subprocess.run(command, capture_output=True, timeout=120)


@contextmanager
def ray_serve(config_file, env_extra=None):
    """`ray start`, `serve deploy <config_file>`, wait for a real answer; always `ray stop`."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", **(env_extra or {})}
    stop_ray()
    started = time.time()
    try:
        subprocess.run(["ray", "start", "--head", "--disable-usage-stats"], env=env, check=True, capture_output=True,
                       cwd=ROOT)
        subprocess.run(["serve", "deploy", str(config_file)], env=env, check=True, capture_output=True, cwd=ROOT)
        base_url = "http://127.0.0.1:8000/v1"
        yield base_url, first_answer_after(base_url, "tiny-reasoner", started)
    finally:
        stop_ray()


def config_variant(name, experimental=None, drop_ingress_config=False):
    """The tutorial's serve_tiny_reasoner.yaml with some settings changed, written to bench_results/."""
    import yaml

    config = yaml.safe_load((ROOT / "serve_tiny_reasoner.yaml").read_text())
    args = config["applications"][0]["args"]
    if experimental is not None:
        args["llm_configs"][0]["experimental_configs"] = experimental
    if drop_ingress_config:
        args.pop("ingress_deployment_config", None)
    path = OUT / f"serve_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SERVERS = {
    "bare vLLM": lambda: bare_vllm(),
    "Ray Serve LLM, tutorial config": lambda: ray_serve(ROOT / "serve_tiny_reasoner.yaml"),
    "Ray Serve LLM, stream batching 50 ms": lambda: ray_serve(
        config_variant("batching50", experimental={"stream_batching_interval_ms": 50})),
    "Ray Serve LLM, direct streaming": lambda: ray_serve(
        config_variant("direct", drop_ingress_config=True),
        {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}),
}


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels, data = [], []
    for name, server in report["servers"].items():
        for run in server["runs"]:
            if run["repeat"] == 0:
                labels.append(f"{name}\nc={run['concurrency']}")
                data.append([v * 1000 for v in run["ttfa_all_s"] if v is not None])
    left.boxplot(data, vert=False)
    left.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    left.set_xlabel("time to first answer token (ms)")
    left.set_title("When the reader first sees the answer")
    name, server = next(iter(report["servers"].items()))
    for kind, colour in (("reasoning", "tab:blue"), ("answer", "tab:orange")):
        times = [t * 1000 for t, k in server["timeline"] if k == kind]
        right.scatter(times, [kind] * len(times), s=8, color=colour)
    right.set_xlabel("ms since the request was sent")
    right.set_title(f"One streamed answer ({name}): reasoning, then answer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(report, concurrencies):
    servers = report["servers"]
    base = servers.get("bare vLLM")
    print("\n| config | cold start | " + " | ".join(
        f"TTFT p50 c={c} | vs bare | first answer p50 c={c} | output tok/s c={c} | vs bare" for c in concurrencies)
        + " |")
    print("| --- | ---: | " + " | ".join("---: | ---: | ---: | ---: | ---:" for _ in concurrencies) + " |")
    for name, server in servers.items():
        cells = [name, f"{server['cold_start_s']:.0f} s"]
        for c in concurrencies:
            runs = [r for r in server["runs"] if r["concurrency"] == c]
            ttft = sorted(r["ttft_s"]["p50"] for r in runs)[len(runs) // 2]
            ttfa = sorted(r["ttfa_s"]["p50"] for r in runs)[len(runs) // 2]
            tps = sorted(r["output_tokens_per_s"] for r in runs)[len(runs) // 2]
            server.setdefault("median", {})[c] = {"ttft_p50_s": ttft, "ttfa_p50_s": ttfa, "output_tokens_per_s": tps}
            if base is not None and "median" in base:
                ratio_ttft = f"{ttft / base['median'][c]['ttft_p50_s']:.2f}×"
                ratio_tps = f"{tps / base['median'][c]['output_tokens_per_s']:.2f}×"
            else:
                ratio_ttft = ratio_tps = "–"
            cells += [f"{ttft * 1000:.1f} ms", ratio_ttft, f"{ttfa * 1000:.0f} ms", f"{tps:.0f}", ratio_tps]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="tiny-reasoner")
    parser.add_argument("--tokenizer", default=str(ROOT / "tiny_reasoner"), help="counts reasoning/answer tokens")
    parser.add_argument("--side-by-side", action="store_true", help="start each server in turn, same load on each")
    parser.add_argument("--servers", nargs="*", default=list(SERVERS), help="with --side-by-side")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--prompts-file", type=Path, help="one prompt per line, instead of the built-in ones")
    parser.add_argument("--out", type=Path, default=OUT / "benchmark.json")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    prompts = (args.prompts_file.read_text().splitlines() if args.prompts_file else default_prompts(args.requests))
    prompts = [p for p in prompts if p.strip()][: args.requests]
    OUT.mkdir(exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"prompts": len(prompts), "max_tokens": args.max_tokens, "servers": {}}
    targets = ([(name, SERVERS[name]) for name in args.servers] if args.side_by_side
               else [(args.base_url, None)])
    for name, start in targets:
        if start is None:
            runs, timeline = benchmark(args.base_url, args.model, prompts, args.concurrency, args.repeats,
                                       args.max_tokens, tokenizer, name)
            report["servers"][name] = {"cold_start_s": float("nan"), "runs": runs, "timeline": timeline}
            continue
        with start() as (base_url, cold_start):
            print(f"{name}: first answer {cold_start:.1f}s after start")
            runs, timeline = benchmark(base_url, args.model, prompts, args.concurrency, args.repeats,
                                       args.max_tokens, tokenizer, name)
        report["servers"][name] = {"cold_start_s": cold_start, "runs": runs, "timeline": timeline}
    print_table(report, args.concurrency)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(f"\nsaved {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
