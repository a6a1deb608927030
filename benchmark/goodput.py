"""Goodput: how many requests per second the tutorial's deployment serves while they still meet a latency goal, with
our load generator checked against vLLM's own benchmark client (`vllm bench serve --goodput`) on the same load.

    python -m benchmark.goodput      # about 15 minutes on 2 cores; bench_results/goodput.json

At each request rate both clients send the same questions (the small model's, greedy, in the same order) at the
same Poisson arrival times, taking turns three times; the table shows each client's medians. Goodput is the number
of requests that met the goal, divided by the run's wall time, as vLLM counts it. vLLM's client knows no answer
token, so the two are compared on a TTFT goal; ours also counts a TTFO goal (time to the first answer token), which
is what a reasoning model's user waits for. The sustained rate is the highest rate at which at least 90% of
requests met the TTFO goal.
"""

import argparse
import asyncio
import dataclasses
import statistics
from pathlib import Path

from harness import servers
from harness.config import CPU_CONFIG, MODEL_ID, ROOT
from harness.load import arrival_times, default_prompts, run_load, vllm_bench_serve
from harness.results import save


@dataclasses.dataclass
class Settings:
    rates: tuple[float, ...] = (2.0, 4.0, 5.0, 6.0, 8.0)  # requests per second
    requests: int = 96  # per rate and client
    max_tokens: int = 600  # a cap the small model's answers stay under: each stream ends at its own answer's end
    ttft_goal_ms: float = 500
    ttfo_goal_ms: float = 2000
    attainment: float = 0.9  # the share of requests that must meet the TTFO goal for a rate to count as sustained
    seed: int = 0
    rounds: int = 3  # per rate and client; the table shows the medians
    tolerance: float = 0.20  # how far our TTFT goodput may be from vLLM's
    config: Path = CPU_CONFIG
    out: Path = ROOT / "bench_results" / "goodput.json"


def ours(base_url, prompts, rate, settings):
    results, wall = asyncio.run(
        run_load(
            base_url, MODEL_ID, prompts, len(prompts), settings.max_tokens, f"ours {rate}/s", None, rate, settings.seed
        )
    )
    done = [r for r in results if r["done"]]
    met_ttft = sum(r["ttft"] * 1000 <= settings.ttft_goal_ms for r in done)
    met_ttfo = sum(r["ttfo"] is not None and r["ttfo"] * 1000 <= settings.ttfo_goal_ms for r in done)
    return {
        "completed": len(done),
        "wall_s": round(wall, 2),
        "ttft_goodput": round(met_ttft / wall, 3),
        "ttft_attainment": round(met_ttft / len(prompts), 3),
        "ttfo_goodput": round(met_ttfo / wall, 3),
        "ttfo_attainment": round(met_ttfo / len(prompts), 3),
    }


def vllms(base_url, prompts, rate, settings):
    result = vllm_bench_serve(
        base_url,
        MODEL_ID,
        prompts,
        settings.max_tokens,
        *("--request-rate", rate, "--seed", settings.seed, "--goodput", f"ttft:{settings.ttft_goal_ms}"),
    )
    met = sum(t * 1000 <= settings.ttft_goal_ms for t in result["ttfts"])
    # Did it send at our moments? Its requests' start times, from its first, against ours from our first.
    starts, planned = sorted(result["start_times"]), arrival_times(len(prompts), rate, settings.seed)
    apart = max(abs((s - starts[0]) - (p - planned[0])) for s, p in zip(starts, planned))
    return {
        "arrivals_apart_max_s": round(apart, 3),
        "completed": result["completed"],
        "wall_s": round(result["duration"], 2),
        "ttft_goodput": round(result["request_goodput"], 3),
        "ttft_attainment": round(met / len(prompts), 3),
    }


def medians(runs):
    """Each number's median over the rounds of one client at one rate."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run(settings):
    prompts = default_prompts(settings.requests)
    rates = {}
    with servers.serve_deployment(settings.config) as (base_url, _):
        ours(base_url, prompts[:16], None, settings)  # warm up: no batch shape is new while measuring
        for rate in settings.rates:
            rounds = {"ours": [], "vLLM's": []}
            for _ in range(settings.rounds):  # taking turns: a slow minute of the 2 cores hits both
                rounds["ours"].append(ours(base_url, prompts, rate, settings))
                rounds["vLLM's"].append(vllms(base_url, prompts, rate, settings))
            row = {client: medians(runs) for client, runs in rounds.items()}
            theirs = row["vLLM's"]["ttft_goodput"]
            row["ttft_goodput_difference"] = round(row["ours"]["ttft_goodput"] / theirs - 1, 3) if theirs else None
            rates[str(rate)] = {**row, "rounds": rounds}
            print(f"{rate}/s: {row}")
    sustained = [float(r) for r, row in rates.items() if row["ours"]["ttfo_attainment"] >= settings.attainment]
    return {"rates": rates, "sustained_rate": max(sustained, default=None)}


def table(result):
    goals = result["settings"]
    lines = [
        f"| rate | TTFT ≤ {goals['ttft_goal_ms']:.0f} ms: ours | vLLM's | ours vs vLLM's | "
        f"TTFO ≤ {goals['ttfo_goal_ms']:.0f} ms: goodput | met the goal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate, row in result["rates"].items():
        ours_, theirs, difference = row["ours"], row["vLLM's"], row["ttft_goodput_difference"]
        lines.append(
            f"| {float(rate):g}/s | {ours_['ttft_goodput']:.2f}/s | {theirs['ttft_goodput']:.2f}/s | "
            f"{'n/a' if difference is None else f'{difference:+.0%}'} | {ours_['ttfo_goodput']:.2f}/s | "
            f"{ours_['ttfo_attainment']:.0%} |"
        )
    return "\n".join(lines)


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=Settings.rates)
    parser.add_argument("--requests", type=int, default=Settings.requests)
    parser.add_argument("--ttft-goal-ms", type=float, default=Settings.ttft_goal_ms)
    parser.add_argument("--ttfo-goal-ms", type=float, default=Settings.ttfo_goal_ms)
    parser.add_argument("--out", type=Path, default=Settings.out)
    args = parser.parse_args()
    settings = Settings(
        rates=tuple(args.rates),
        requests=args.requests,
        ttft_goal_ms=args.ttft_goal_ms,
        ttfo_goal_ms=args.ttfo_goal_ms,
        out=args.out,
    )
    record = save(settings.out, settings, run(settings))
    print(table(record))
    print(f"sustained rate (≥{settings.attainment:.0%} within the TTFO goal): {record['sustained_rate']}/s")
    apart = {r: row["ttft_goodput_difference"] for r, row in record["rates"].items()}
    apart = {r: d for r, d in apart.items() if d is None or abs(d) > settings.tolerance}
    if apart:
        raise SystemExit(f"our goodput is more than {settings.tolerance:.0%} from vLLM's at: {apart}")
    print(f"saved {settings.out}; our TTFT goodput is within {settings.tolerance:.0%} of vLLM's at every rate")


if __name__ == "__main__":
    main()
