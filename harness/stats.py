"""From timed requests to numbers: tokens, percentiles, throughput, and where the CPU time went."""

import os
import statistics

import psutil


def percentiles(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"p50": None, "p90": None, "p99": None}

    def pick(q):
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


def box(values):
    """What a box plot draws (median, quartiles, whiskers at 1.5 IQR), so that the plot needs no raw data."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    low = min(v for v in values if v >= q1 - 1.5 * (q3 - q1))
    high = max(v for v in values if v <= q3 + 1.5 * (q3 - q1))
    return {"q1": q1, "med": med, "q3": q3, "whislo": low, "whishi": high}


def count_tokens(result, tokenizer):
    """Reasoning and answer tokens, counted from the streamed text with the model's tokenizer (vLLM reports
    usage.reasoning_tokens as 0 when the chat template opens <think> in the prompt, as QwQ's does), and the mean
    time between tokens. Where the text is noise (a model with random weights), the server's count is used."""
    result["reasoning_tokens"] = len(tokenizer.encode(result["reasoning"], add_special_tokens=False))
    result["answer_tokens"] = len(tokenizer.encode(result["answer"], add_special_tokens=False))
    counted = result["reasoning_tokens"] + result["answer_tokens"]
    tokens = result.get("completion_tokens") or counted
    result["output_tokens"] = tokens
    ttft = result["ttft"]
    result["itl"] = (result["e2e"] - ttft) / (tokens - 1) if ttft is not None and tokens > 1 else None
    return result


def chunk_gaps(results):
    """Every gap between two streamed chunks of one request: the stall a reader sees between words."""
    return [b[0] - a[0] for r in results for a, b in zip(r["chunks"], r["chunks"][1:])]


def summarize(results, wall, tokenizer):
    """One run's numbers: percentiles over its requests, and throughput over its wall time."""
    for r in results:
        count_tokens(r, tokenizer)
    output_tokens = sum(r["output_tokens"] for r in results)
    return {
        "requests": len(results),
        "ok": sum(r["status"] == 200 and r["done"] for r in results),  # the stream reached [DONE]
        "wall_s": wall,
        "request_throughput": len(results) / wall,
        "output_tokens_per_s": output_tokens / wall,
        **{f"{m}_s": percentiles(r[m] for r in results) for m in ("ttft", "ttfr", "ttfo", "itl", "e2e")},
        "chunk_gap_s": percentiles(chunk_gaps(results)),
        "reasoning_tokens_mean": sum(r["reasoning_tokens"] for r in results) / len(results),
        "answer_tokens_mean": sum(r["answer_tokens"] for r in results) / len(results),
        "output_tokens_mean": output_tokens / len(results),
    }


def medians_over_repeats(server, concurrency):
    """The median over the repeats of each run's p50 and throughput: one disturbed repeat does not move it."""
    runs = [run for run in server["runs"] if run["concurrency"] == concurrency]

    def median(pick):
        values = [pick(run) for run in runs]
        return statistics.median(values) if None not in values else None

    return {
        "ttft_p50_s": median(lambda run: run["ttft_s"]["p50"]),
        "ttfo_p50_s": median(lambda run: run["ttfo_s"]["p50"]),
        "output_tokens_per_s": median(lambda run: run["output_tokens_per_s"]),
    }


# Where the CPU time goes: (what the command line contains, the group it counts in), first match wins.
PROCESS_GROUPS = [
    ("VLLM::Worker", "engine: model (VLLM::Worker)"),
    ("EngineCore", "engine: scheduler (VLLM::EngineCore)"),
    ("vllm.entrypoints.openai.api_server", "vLLM API server"),
    (":LLMServer", "Serve: LLM server replica"),
    (":OpenAiIngress", "Serve: OpenAI ingress replica"),
    ("ProxyActor", "Serve: HTTP proxy"),
    ("haproxy", "HAProxy"),
    ("ray", "Ray: daemons, controller, other actors"),
]


def cpu_seconds_by_group():
    """CPU seconds used so far by each group of processes on this machine (this process counts as the client)."""
    seconds = {}
    for process in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], " ".join(process.info["cmdline"] or [])
        if times is None:
            continue
        if process.info["pid"] == os.getpid():
            group = "benchmark client"
        else:
            group = next((name for needle, name in PROCESS_GROUPS if needle in cmdline), "other")
        seconds[group] = seconds.get(group, 0.0) + times.user + times.system
    return seconds


def cores_busy(before, after, wall):
    """Cores each group kept busy between two cpu_seconds_by_group() readings (processes that ended in between
    count partly)."""
    return {group: round(max(0.0, after[group] - before.get(group, 0.0)) / wall, 2) for group in after}


def mismatches(kept, described):
    """How the rows of a results file `kept` were measured otherwise than `described` ({"machine", "settings"}): the
    settings, the machine's CPUs and GPUs, and Ray's and vLLM's versions (the date may differ). A row without its own
    description (an older file) is read with the file's."""
    differ = []
    for name, row in kept["servers"].items():
        machine = row.get("machine", kept["machine"])
        settings = row.get("settings", {key: kept.get(key) for key in described["settings"]})
        for key, value in described["settings"].items():
            if settings.get(key) != value:
                differ.append(f"{name}: {key} {settings.get(key)!r}, now {value!r}"[:200])
        for key in ("cpus", "gpus", "ray", "vllm"):
            if machine.get(key) != described["machine"][key]:
                differ.append(f"{name}: {key} {machine.get(key)!r}, now {described['machine'][key]!r}")
    return differ
