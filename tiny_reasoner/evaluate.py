"""Score the tiny reasoning model the way the tutorial serves it: vLLM's OpenAI-compatible server on CPU, the
`deepseek_r1` reasoning parser, greedy decoding.

    python -m tiny_reasoner.evaluate                 # about 8 minutes on 2 cores; writes eval_results.json

For each task family it reports the share of exactly correct answers and of well-formed outputs (non-empty
`reasoning`, non-empty `content`, no think tag in `content`), with thinking on and with thinking off.
"""

import argparse
import asyncio
import json
import time
from pathlib import Path

from openai import AsyncOpenAI

from harness.config import MODEL_ID
from harness.servers import bare_vllm, stop_on_sigterm
from tiny_reasoner import tasks

HERE = Path(__file__).resolve().parent


async def ask_all(base_url, items, thinking, budget=None, model=MODEL_ID, concurrency=16):
    client = AsyncOpenAI(base_url=base_url, api_key="not-needed")
    limit = asyncio.Semaphore(concurrency)
    extra = {"chat_template_kwargs": {"enable_thinking": thinking}}
    if budget is not None:
        extra["thinking_token_budget"] = budget  # vLLM forces </think> after this many reasoning tokens

    async def ask(item):
        async with limit:
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": item["prompt"]}],
                temperature=0,
                max_tokens=600,
                extra_body=extra,
            )
        message = response.choices[0].message
        return {
            **item,
            "reasoning": getattr(message, "reasoning", None),
            "content": message.content,
            "completion_tokens": response.usage.completion_tokens,
        }

    try:
        return await asyncio.gather(*(ask(item) for item in items))
    finally:
        await client.close()


def score(results, thinking, families=("letters", "sums", "other")):
    table = {}
    for family in families:
        rows = [r for r in results if r["family"] == family]
        if thinking:
            answers = [r["content"] for r in rows]
            formed = [tasks.well_formed(r["reasoning"], r["content"]) for r in rows]
        else:
            # With thinking off the prompt already closes the think block, and the deepseek_r1 parser (which only
            # looks at the output) files the whole answer under `reasoning` in non-streamed replies. Score the
            # answer wherever the parser put it, and count how often that happened.
            answers = [r["content"] or r["reasoning"] for r in rows]
            formed = [bool((a or "").strip()) and not any(t in a for t in tasks.THINK_TAGS) for a in answers]
        correct = [tasks.answer_correct(r, a) for r, a in zip(rows, answers)]
        table[family] = {
            "prompts": len(rows),
            "correct": round(sum(correct) / len(rows), 4),
            "well_formed": round(sum(formed) / len(rows), 4),
            "mean_completion_tokens": round(sum(r["completion_tokens"] for r in rows) / len(rows), 1),
            "answer_in_reasoning_field": sum(1 for r in rows if not r["content"]),
            "wrong_examples": [
                {"prompt": r["prompt"], "answer": a} for r, a, ok in zip(rows, answers, correct) if not ok
            ][:5],
        }
    return table


def thinking_table(report):
    """The notebook's table of thinking controls, as markdown, from a saved report (a test keeps them equal)."""
    rows = [
        "| thinking | letters: correct | tokens per answer | sums: correct | tokens per answer |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {"thinking_on": "on", "thinking_off": "off"}
    budgets = sorted(int(key.rsplit("_", 1)[1]) for key in report if key.startswith("thinking_budget_"))
    for key in ["thinking_on", "thinking_off"] + [f"thinking_budget_{b}" for b in budgets]:
        name = names.get(key) or f"on, budget {key.rsplit('_', 1)[1]} tokens"
        letters, sums = report[key]["letters"], report[key]["sums"]
        rows.append(
            f"| {name} | {letters['correct']:.1%} | {letters['mean_completion_tokens']:.0f} | "
            f"{sums['correct']:.1%} | {sums['mean_completion_tokens']:.0f} |"
        )
    return "\n".join(rows)


def main():
    stop_on_sigterm()  # a `timeout` stops the server too
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE)
    parser.add_argument("--letters", type=int, default=300, help="held-out letter-counting prompts")
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=[64, 128],
        help="thinking_token_budget values to score letters and sums at, thinking on",
    )
    parser.add_argument("--out", type=Path, default=HERE / "eval_results.json")
    parser.add_argument("--log", type=Path, default=Path("/tmp/tiny_reasoner_eval_vllm.log"))
    args = parser.parse_args()

    items = tasks.held_out_letter_prompts(args.letters) + tasks.sum_prompts() + tasks.held_out_other_prompts()
    report = {"model": str(args.model), "server": "vllm api_server, CPU, --reasoning-parser deepseek_r1, greedy"}
    started = time.time()
    with bare_vllm(args.model, log_path=args.log) as (base_url, ready_seconds):
        report["server_ready_seconds"] = round(ready_seconds, 1)
        for thinking in (True, False):
            results = asyncio.run(ask_all(base_url, items, thinking))
            report["thinking_on" if thinking else "thinking_off"] = score(results, thinking)
        reasoning_items = [item for item in items if item["family"] != "other"]
        for budget in args.budgets:
            results = asyncio.run(ask_all(base_url, reasoning_items, True, budget))
            report[f"thinking_budget_{budget}"] = score(results, True, families=("letters", "sums"))
    report["total_seconds"] = round(time.time() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"{'family':8} {'prompts':>7} | {'thinking on: correct':>20} {'well-formed':>11} {'tokens':>6} |"
        f" {'thinking off: correct':>21} {'tokens':>6}"
    )
    for family in ("letters", "sums", "other"):
        on, off = report["thinking_on"][family], report["thinking_off"][family]
        print(
            f"{family:8} {on['prompts']:7d} | {on['correct']:20.1%} {on['well_formed']:11.1%} "
            f"{on['mean_completion_tokens']:6.0f} | {off['correct']:21.1%} {off['mean_completion_tokens']:6.0f}"
        )
    print(f"\n{'thinking':12} | {'letters: correct':>16} {'tokens':>6} | {'sums: correct':>13} {'tokens':>6}")
    for key in ["thinking_on", "thinking_off"] + [f"thinking_budget_{b}" for b in args.budgets]:
        letters, sums = report[key]["letters"], report[key]["sums"]
        name = key.removeprefix("thinking_")
        print(
            f"{name:12} | {letters['correct']:16.1%} {letters['mean_completion_tokens']:6.0f} |"
            f" {sums['correct']:13.1%} {sums['mean_completion_tokens']:6.0f}"
        )
    print(f"saved {args.out} ({report['total_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
