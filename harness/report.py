"""The results as a reader sees them: Markdown tables (the notebook quotes them) and a plot."""

import statistics
from pathlib import Path

from harness.logs import QUICKSTART_STEPS
from harness.stats import PROCESS_GROUPS, medians_over_repeats


def moments_table(seconds_after, since):
    """A run's moments as the notebook shows them: {moment: seconds} after `since` ("the load started", ...)."""
    rows = [f"| {name} | {seconds} |" for name, seconds in seconds_after.items()]
    return "\n".join([f"| moment | seconds after {since} |", "| --- | ---: |", *rows])


def servers_that_ran(report):
    """The servers that started and ran the load (a server that failed to start only has an "error")."""
    return {name: server for name, server in report["servers"].items() if "runs" in server}


def ms(seconds):
    return f"{seconds * 1000:.0f} ms" if seconds is not None else "–"


def summary_table(report, concurrencies):
    """The side-by-side table, with ratios to the best bare vLLM run for each number (lowest latency, highest
    throughput): the hardest baseline."""
    servers = servers_that_ran(report)
    numbers = {name: {c: medians_over_repeats(server, c) for c in concurrencies} for name, server in servers.items()}
    bare = [name for name in servers if name.startswith("bare vLLM")]
    best = {"ttft_p50_s": min, "ttfo_p50_s": min, "output_tokens_per_s": max}
    best_bare = (
        {c: {key: pick(numbers[name][c][key] for name in bare) for key, pick in best.items()} for c in concurrencies}
        if bare
        else None
    )

    def ratio(value, key, c):
        return f"{value / best_bare[c][key]:.2f}×" if best_bare and value is not None and best_bare[c][key] else "–"

    header = " | ".join(
        f"TTFT p50 c={c} | vs best bare | TTFO p50 c={c} | vs best bare | output tok/s c={c} | vs best bare"
        for c in concurrencies
    )
    lines = [
        f"| config | cold start | {header} |",
        "| --- | ---: | " + " | ".join("---: | ---: | ---: | ---: | ---: | ---:" for _ in concurrencies) + " |",
    ]
    for name, server in servers.items():
        cold_start = server["cold_start_s"]
        cells = [name, f"{cold_start:.0f} s" if cold_start is not None else "–"]
        for c in concurrencies:
            ttft, ttfo, tps = (numbers[name][c][key] for key in ("ttft_p50_s", "ttfo_p50_s", "output_tokens_per_s"))
            cells += [
                ms(ttft),
                ratio(ttft, "ttft_p50_s", c),
                ms(ttfo),
                ratio(ttfo, "ttfo_p50_s", c),
                f"{tps:.0f}",
                ratio(tps, "output_tokens_per_s", c),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians_and_gaps(server, c):
    """medians_over_repeats(), and the medians over the repeats of the per-token and chunk gaps (p50, p99)."""
    runs = [run for run in server["runs"] if run["concurrency"] == c]
    gaps = {
        f"{metric}_{p}_s": statistics.median(run[f"{metric}_s"][p] for run in runs)
        for metric in ("itl", "chunk_gap")
        for p in ("p50", "p99")
    }
    return {**medians_over_repeats(server, c), **gaps}


def long_output_table(report):
    """For long outputs (every request reasons until max_tokens, no answer): per server and concurrency, the first
    token, the time per output token (each request's mean; p50 and p99 over the requests), the gaps between streamed
    chunks that a reader sees, and throughput; ratios to bare vLLM. Cold start on each server's first row."""
    servers = servers_that_ran(report)
    bare = servers.get("bare vLLM")
    lines = [
        "| config | cold start | c | TTFT p50 | vs bare | per token p50 / p99 | vs bare | chunk gap p50 / p99 "
        "| output tok/s | vs bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ratio(server_numbers, bare_numbers, key):
        value, baseline = server_numbers[key], bare_numbers.get(key)
        return f"{value / baseline:.2f}×" if baseline and value is not None else "–"

    for name, server in servers.items():
        for i, c in enumerate(report["concurrency"]):
            this = medians_and_gaps(server, c)
            baseline = medians_and_gaps(bare, c) if bare else {}
            first_row = i == 0
            cold = f"{server['cold_start_s']:.0f} s" if first_row and server["cold_start_s"] is not None else ""
            lines.append(
                f"| {name if first_row else ''} | {cold} | {c} | {ms(this['ttft_p50_s'])} | "
                f"{ratio(this, baseline, 'ttft_p50_s')} | "
                f"{this['itl_p50_s'] * 1000:.1f} / {this['itl_p99_s'] * 1000:.1f} ms | "
                f"{ratio(this, baseline, 'itl_p50_s')} | "
                f"{this['chunk_gap_p50_s'] * 1000:.0f} / {this['chunk_gap_p99_s'] * 1000:.0f} ms | "
                f"{this['output_tokens_per_s']:.0f} | {ratio(this, baseline, 'output_tokens_per_s')} |"
            )
    return "\n".join(lines)


def cpu_table(report, concurrency):
    """Where the cores went at one concurrency: cores each group of processes kept busy (median over repeats)."""
    servers = servers_that_ran(report)
    groups = [name for _, name in PROCESS_GROUPS] + ["benchmark client", "other"]
    cores = {
        name: {
            group: statistics.median(
                r["cpu_cores"].get(group, 0.0) for r in server["runs"] if r["concurrency"] == concurrency
            )
            for group in groups
        }
        for name, server in servers.items()
    }
    lines = [
        f"| cores busy at c={concurrency} | " + " | ".join(servers) + " |",
        "| --- | " + " | ".join("---:" for _ in servers) + " |",
    ]
    for group in groups + ["total"]:
        values = [sum(cores[name].values()) if group == "total" else cores[name][group] for name in servers]
        if any(v >= 0.005 for v in values):
            lines.append(f"| {group} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def questions_table(report, servers=None):
    """When each of the notebook's questions starts its answer, and how many tokens it thinks and answers."""
    lines = [
        "| config | question | TTFT | TTFO (first answer token) | last token | reasoning tokens | answer tokens |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, server in report["servers"].items():
        if servers is not None and name not in servers:
            continue
        for question, r in server.get("notebook_questions", {}).items():
            lines.append(
                f"| {name} | {question} | {ms(r['ttft'])} | {ms(r['ttfo'])} | {ms(r['e2e'])} | "
                f"{r['reasoning_tokens']} | {r['answer_tokens']} |"
            )
    return "\n".join(lines)


def plot(report, path):
    """Left: time to the first answer token, a box per server and concurrency (all requests of all repeats).
    Right: one streamed answer per server, chunk by chunk (thin: reasoning, thick: answer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    boxes = []
    started = servers_that_ran(report)
    for name, server in started.items():
        for concurrency, stats in server["ttfo_box_s"].items():
            if stats:
                boxes.append(
                    {**{key: value * 1000 for key, value in stats.items()}, "label": f"{name}, c={concurrency}"}
                )
    if boxes:
        left.bxp(boxes, orientation="horizontal", showfliers=False)
    else:  # long outputs with ignore_eos: every request reasoned until max_tokens
        left.text(0.5, 0.5, "no answer tokens: every request reasoned until max_tokens", ha="center")
    left.tick_params(axis="y", labelsize=7)
    left.invert_yaxis()
    left.set_xlabel("TTFO: time to first answer token (ms), all requests")
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


def side_by_side_plot(report, path, title):
    """The side-by-side table at a glance: for each measure a bar per server at each concurrency (medians over the
    repeats, as the table's). Measures that no run has (TTFO, when every request reasoned until max_tokens) are left
    out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = servers_that_ran(report)
    concurrencies = report["concurrency"]
    measures = [  # (title, key in medians_and_gaps(), scale)
        ("time to first token, p50 (ms)", "ttft_p50_s", 1000),
        ("time to first answer token, p50 (ms)", "ttfo_p50_s", 1000),
        ("time per output token, p50 (ms)", "itl_p50_s", 1000),
        ("output tokens/s, all streams", "output_tokens_per_s", 1),
    ]
    numbers = {server: [medians_and_gaps(measured, c) for c in concurrencies] for server, measured in servers.items()}
    values = {name: {server: [n[key] for n in numbers[server]] for server in servers} for name, key, _ in measures}
    shown = [(name, scale) for name, _, scale in measures if all(None not in v for v in values[name].values())]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6))
    width = 0.8 / len(servers)
    for axis, (name, scale) in zip(axes, shown):
        for i, server in enumerate(servers):
            axis.bar(
                [x + i * width for x in range(len(concurrencies))],
                [v * scale for v in values[name][server]],
                width,
                label=server,
            )
        axis.set_xticks(
            [x + width * (len(servers) - 1) / 2 for x in range(len(concurrencies))], [f"c={c}" for c in concurrencies]
        )
        axis.set_title(name, fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(servers), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100, metadata={"Software": None})


# The GPU side-by-side results, each with its plot beside it: python -m harness.report
GPU_PLOTS = {
    "one_gpu": "The small model on one GPU: bare vLLM and the tutorial's two serving paths",
    "production_tp1": "A QwQ-32B-sized model on one GPU (tensor_parallel_size=1), 2000-token chains",
}


def write_gpu_plots(folder):
    """benchmark/results/<name>.png from the committed <name>.json, into folder."""
    from harness import results

    for name, title in GPU_PLOTS.items():
        report = results.read(name)
        side_by_side_plot(report, Path(folder) / f"{name}.png", f"{title} ({report['machine']['gpus'][0]})")


def duration(seconds):
    """A step's time as the README says it: "45 s", "3 min 8 s"."""
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def quickstart_table(columns):
    """{column title: {step: seconds}} (harness.logs.quickstart_steps) as the README's table of step times."""
    steps = next(iter(columns.values()))
    lines = ["| step | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for step in steps:
        cells = [duration(seconds[step]) for seconds in columns.values()]
        lines.append(f"| {'**in all**' if step == 'in all' else step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_times(columns, step):
    """One row of quickstart_table as the README's text says it where the step is: "36 s on 2 CPU cores and …"."""
    return " and ".join(f"{duration(steps[step])} on {machine}" for machine, steps in columns.items())


def time_to_complete(columns):
    """The README's time to complete, from the same numbers as quickstart_table: "about 9 minutes on 2 CPU cores (1 of
    them installing), …". An install under half a minute is ci/setup.sh finding the pins installed already (the lent
    GPU machines get them from carried wheels before the quick start), so it is said so."""
    install = QUICKSTART_STEPS[0][0]

    def about(seconds):
        return round(seconds / 60)

    def installing(seconds):
        return f"{about(seconds)} of them installing" if about(seconds) else "its requirements installed already"

    return ", ".join(
        f"about {about(steps['in all'])} minutes on {machine} ({installing(steps[install])})"
        for machine, steps in columns.items()
    )


if __name__ == "__main__":
    from harness.config import ROOT

    write_gpu_plots(ROOT / "benchmark" / "results")
