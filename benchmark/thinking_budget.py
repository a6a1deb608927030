"""Thinking budgets as a curve: accuracy and time to the first answer token (TTFO) per `thinking_token_budget`, for
each of the small model's task kinds, on the tutorial's CPU deployment.

    python -m benchmark.thinking_budget      # about 15 minutes on 2 cores; bench_results/thinking_budget.json + .png

vLLM ends the reasoning after `budget` tokens by writing `</think>` itself; the model then writes its answer from
the chain so far. Beside each budget's accuracy stands the share of questions whose unlimited chain fits within that
budget: where the two lines meet, a cut chain is as good as no answer, so what a budget costs is the chains it cuts.
"""

import argparse
import asyncio
import dataclasses
import json
import statistics
from pathlib import Path

from tokenizers import Tokenizer

from harness import servers
from harness.config import CPU_CONFIG, MODEL_ID, ROOT
from harness.load import TOKENIZER, run_load
from harness.results import save
from harness.stats import percentiles
from tiny_reasoner import tasks

FAMILIES = ("letters", "sums")


@dataclasses.dataclass
class Settings:
    budgets: tuple[int, ...] = (16, 32, 48, 64, 96, 128, 160, 192, 256)  # and unlimited, always
    letters: int = 200  # held-out letter-counting questions (the sums are every n from 1 to 200)
    concurrency: int = 16
    max_tokens: int = 600
    config: Path = CPU_CONFIG
    out: Path = ROOT / "bench_results" / "thinking_budget.json"


def questions(settings):
    return tasks.held_out_letter_prompts(settings.letters) + tasks.sum_prompts()


def ask(base_url, items, settings, budget, tokenizer):
    """Every question once, streamed; each item with its reply's answer, correctness, TTFO and reasoning tokens."""
    extra = {} if budget is None else {"thinking_token_budget": budget}
    label = f"budget {budget or 'unlimited'}"
    replies, _ = asyncio.run(
        run_load(
            base_url, MODEL_ID, [i["prompt"] for i in items], settings.concurrency, settings.max_tokens, label, extra
        )
    )
    return [
        {
            "family": item["family"],
            "correct": tasks.answer_correct(item, reply["answer"]),
            "well_formed": tasks.well_formed(reply["reasoning"], reply["answer"]),
            "ttfo": reply["ttfo"],
            "reasoning_tokens": len(tokenizer.encode(reply["reasoning"], add_special_tokens=False).ids),
            "done": reply["done"],
        }
        for item, reply in zip(items, replies)
    ]


def summary(rows, unlimited_lengths, budget):
    ttfo = percentiles(r["ttfo"] for r in rows)
    return {
        "questions": len(rows),
        "correct": round(sum(r["correct"] for r in rows) / len(rows), 4),
        "well_formed": round(sum(r["well_formed"] for r in rows) / len(rows), 4),
        "chains_within_budget": round(sum(n <= budget for n in unlimited_lengths) / len(rows), 4) if budget else 1.0,
        "ttfo_p50_s": round(ttfo["p50"], 3) if ttfo["p50"] is not None else None,
        "ttfo_p90_s": round(ttfo["p90"], 3) if ttfo["p90"] is not None else None,
        "reasoning_tokens_mean": round(statistics.mean(r["reasoning_tokens"] for r in rows), 1),
        "unfinished": sum(not r["done"] for r in rows),
    }


def smallest_budget_within(result, family, points=0.01):
    """The smallest measured budget whose accuracy is within `points` of unlimited thinking's, or None."""
    curve = result["families"][family]
    unlimited = curve["unlimited"]["correct"]
    fits = [int(b) for b, row in curve.items() if b != "unlimited" and row["correct"] >= unlimited - points]
    return min(fits, default=None)


def run(settings):
    items = questions(settings)
    tokenizer = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))  # counts the reasoning's tokens
    per_budget = {}
    with servers.serve_deployment(settings.config) as (base_url, _):
        ask(base_url, items[:16], settings, None, tokenizer)  # warm up: no batch shape is new while measuring
        for budget in (None, *settings.budgets):
            per_budget["unlimited" if budget is None else str(budget)] = ask(
                base_url, items, settings, budget, tokenizer
            )
    families = {}
    for family in FAMILIES:
        lengths = [r["reasoning_tokens"] for r in per_budget["unlimited"] if r["family"] == family]
        families[family] = {
            key: summary([r for r in rows if r["family"] == family], lengths, None if key == "unlimited" else int(key))
            for key, rows in per_budget.items()
        }
    result = {"families": families}
    result["smallest_budget_within_1_point"] = {f: smallest_budget_within(result, f) for f in FAMILIES}
    return result


def table(result):
    """The README's table: per budget and task kind, accuracy, TTFO p50 and the chains that fit the budget."""
    lines = [
        "| budget | letters: correct | chains that fit | TTFO p50 | sums: correct | chains that fit | TTFO p50 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in result["families"]["letters"]:
        cells = [key]
        for family in FAMILIES:
            row = result["families"][family][key]
            cells += [
                f"{row['correct']:.1%}",
                f"{row['chains_within_budget']:.0%}",
                f"{row['ttfo_p50_s'] * 1000:.0f} ms",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy, ttfo) = plt.subplots(1, 2, figsize=(10, 3.8))
    for family, color in zip(FAMILIES, ("tab:blue", "tab:orange")):
        curve = result["families"][family]
        budgets = [int(b) for b in curve if b != "unlimited"]
        rows = [curve[str(b)] for b in budgets]
        accuracy.plot(budgets, [100 * r["correct"] for r in rows], "o-", color=color, label=f"{family}: correct")
        accuracy.plot(
            budgets,
            [100 * r["chains_within_budget"] for r in rows],
            ":",
            color=color,
            label=f"{family}: chains that fit",
        )
        accuracy.axhline(100 * curve["unlimited"]["correct"], color=color, alpha=0.3)
        ttfo.plot(budgets, [1000 * r["ttfo_p50_s"] for r in rows], "o-", color=color, label=family)
        ttfo.axhline(1000 * curve["unlimited"]["ttfo_p50_s"], color=color, alpha=0.3)
    accuracy.set(xlabel="thinking_token_budget", ylabel="% of questions", title="Accuracy (line: unlimited)")
    ttfo.set(xlabel="thinking_token_budget", ylabel="ms", title="TTFO p50 (line: unlimited)")
    accuracy.legend(fontsize=8)
    ttfo.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=Settings.budgets)
    parser.add_argument("--letters", type=int, default=Settings.letters)
    parser.add_argument("--out", type=Path, default=Settings.out)
    args = parser.parse_args()
    settings = Settings(budgets=tuple(args.budgets), letters=args.letters, out=args.out)
    record = save(settings.out, settings, run(settings))
    plot(record, settings.out.with_suffix(".png"))
    print(table(record))
    print(json.dumps(record["smallest_budget_within_1_point"]))
    print(f"saved {settings.out} and {settings.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
