"""Does our load generator measure what vLLM's own benchmark client measures? Both clients, taking turns, send the
same load (the same prompts, outputs of exactly --max-tokens tokens) to one endpoint; the check fails (exit 1) when
their TTFT p50 or output tokens/s differ by more than --tolerance at any concurrency.

    python -m benchmark.peer_check                                        # starts the tutorial's deployment
    python -m benchmark.peer_check --base-url http://127.0.0.1:8000/v1    # an endpoint that is running

Each client's TTFT p50 is taken over all its requests of all rounds, and its throughput is the median of its rounds:
on 2 cores, one round can stall for a second (the client's process waits for a CPU), whichever client sends it.
vLLM's client counts its first token at the first chunk (the role chunk, which vLLM sends with the first token);
ours at the first chunk with text (reasoning or answer).
"""

import argparse
import asyncio
import dataclasses
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

from harness import servers
from harness.config import CPU_CONFIG, MODEL_ID, ROOT
from harness.load import default_prompts, run_load, vllm_bench_serve
from harness.results import save


def vllm_client(base_url, model, prompts, concurrency, max_tokens):
    """vLLM's benchmark client on `prompts`: its per-request TTFTs and its output tokens/s."""
    result = vllm_bench_serve(base_url, model, prompts, max_tokens, "--ignore-eos", "--max-concurrency", concurrency)
    return {"ttft_s": result["ttfts"], "output_tokens_per_s": result["output_throughput"]}


def our_client(base_url, model, prompts, concurrency, max_tokens):
    results, wall = asyncio.run(
        run_load(base_url, model, prompts, concurrency, max_tokens, f"ours c={concurrency}", {"ignore_eos": True})
    )
    unfinished = [r for r in results if not r["done"]]
    if unfinished:
        raise RuntimeError(f"our client: {len(unfinished)} of {len(prompts)} streams did not finish")
    tokens = sum(r["completion_tokens"] for r in results)
    return {"ttft_s": [r["ttft"] for r in results], "output_tokens_per_s": tokens / wall}


CLIENTS = {"vLLM's bench client": vllm_client, "our load generator": our_client}


def compare(rounds):
    """Each client's pooled TTFT p50 and median throughput over `rounds` ({client: [round, ...]}), and how far ours
    is from vLLM's (our value / vLLM's - 1) for each."""
    numbers = {
        name: {
            "ttft_p50_s": statistics.median(t for r in runs for t in r["ttft_s"]),
            "output_tokens_per_s": statistics.median(r["output_tokens_per_s"] for r in runs),
        }
        for name, runs in rounds.items()
    }
    ours, theirs = numbers["our load generator"], numbers["vLLM's bench client"]
    numbers["difference"] = {key: ours[key] / theirs[key] - 1 for key in ours}
    return numbers


def table(result):
    lines = ["| concurrency | client | TTFT p50 | output tok/s |", "| ---: | --- | ---: | ---: |"]
    for concurrency, numbers in result["concurrency"].items():
        for name in CLIENTS:
            n = numbers[name]
            lines.append(
                f"| {concurrency} | {name} | {n['ttft_p50_s'] * 1000:.0f} ms | {n['output_tokens_per_s']:.0f} |"
            )
        d = numbers["difference"]
        lines.append(f"| {concurrency} | ours vs vLLM's | {d['ttft_p50_s']:+.0%} | {d['output_tokens_per_s']:+.0%} |")
    return "\n".join(lines)


@dataclasses.dataclass
class Settings:
    base_url: str | None = None  # an endpoint that is running (default: start the tutorial's deployment)
    concurrency: tuple[int, ...] = (1, 16)
    requests: tuple[int, ...] = (16, 128)  # per round, one per concurrency
    max_tokens: int = 128  # every output exactly this long (ignore_eos)
    rounds: int = 5
    tolerance: float = 0.20  # how far the clients' TTFT p50 and tokens/s may be apart
    out: Path = ROOT / "bench_results" / "peer_check.json"


def run(settings):
    """Both clients, taking turns, on one endpoint: each concurrency's numbers and how far apart the clients are."""
    if settings.base_url:
        endpoint = nullcontext((settings.base_url, None))
    else:
        endpoint = servers.serve_deployment(CPU_CONFIG)
    result = {"ignore_eos": True, "concurrency": {}}
    with endpoint as (base_url, _):
        # Warm up at the highest concurrency: no batch size is seen for the first time while measuring.
        top = max(settings.concurrency)
        our_client(base_url, MODEL_ID, default_prompts(top), top, settings.max_tokens)
        for concurrency, count in zip(settings.concurrency, settings.requests):
            prompts = default_prompts(count)
            rounds = {name: [] for name in CLIENTS}
            for round_ in range(settings.rounds):
                for name, client in CLIENTS.items():  # taking turns: a slow minute hits both
                    started = time.perf_counter()
                    rounds[name].append(client(base_url, MODEL_ID, prompts, concurrency, settings.max_tokens))
                    tps = rounds[name][-1]["output_tokens_per_s"]
                    took = time.perf_counter() - started
                    print(f"c={concurrency} round {round_ + 1} {name}: {tps:.0f} tok/s ({took:.0f} s)")
            result["concurrency"][str(concurrency)] = {"requests": count, **compare(rounds)}
    return result


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="an endpoint that is running (default: start the tutorial's deployment)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=Settings.concurrency)
    parser.add_argument("--requests", type=int, nargs="*", default=Settings.requests, help="one per concurrency")
    parser.add_argument("--max-tokens", type=int, default=Settings.max_tokens)
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--tolerance", type=float, default=Settings.tolerance)
    parser.add_argument("--out", type=Path, default=Settings.out)
    args = vars(parser.parse_args())
    settings = Settings(**{**args, "concurrency": tuple(args["concurrency"]), "requests": tuple(args["requests"])})
    if len(settings.requests) != len(settings.concurrency):
        parser.error("--requests takes one number per --concurrency")
    result = save(settings.out, settings, run(settings))
    print("\n" + table(result))
    print(f"saved {settings.out}")
    apart = [
        f"c={c} {key}: {d:+.0%}"
        for c, numbers in result["concurrency"].items()
        for key, d in numbers["difference"].items()
        if abs(d) > settings.tolerance
    ]
    if apart:
        raise SystemExit(f"the clients differ by more than {settings.tolerance:.0%}: " + ", ".join(apart))
    print(f"the clients agree within {settings.tolerance:.0%}")


if __name__ == "__main__":
    main()
