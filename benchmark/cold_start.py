"""Where a cold start's time goes: bare vLLM next to the tutorial's deployment, phase by phase, from their own logs.

    python -m benchmark.cold_start --out benchmark/results/cold_start.json   # about 10 minutes on 2 cores

Each server is started the way a reader starts it and timed until the model answers a real request: bare vLLM's
OpenAI server, and the notebook's steps (`local_cluster.py start`, `serve start`, `serve run ... --non-blocking`).
The phases between are read from the timestamps of Ray's and vLLM's own log lines (MILESTONES). Every start gets an
empty compile cache (vLLM's and torch's), as on a reader's first run, except the "second start" rows, which reuse the
caches the start before them left. Writes the JSON and a timeline plot beside it (.png).
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import yaml

from harness import servers
from harness.config import CPU_CONFIG, MODEL_ID, ROOT, engine_cli_args, engine_env, llm_config
from harness.logs import MILESTONES, RAY_ONLY, READY, first_time, phases
from harness.results import save

LOGS = ROOT / "bench_results" / "cold_start"  # bare vLLM's logs, read for its milestones


@dataclasses.dataclass
class Settings:
    config: Path = CPU_CONFIG  # the Serve config whose model, engine arguments and variables every start uses
    out: Path = ROOT / "bench_results" / "cold_start.json"  # and the timeline plot beside it (.png)


def compile_caches(folder):
    """vLLM's and torch's compile caches in `folder`: empty for a first start, as on a reader's first run."""
    return {"VLLM_CACHE_ROOT": f"{folder}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{folder}/torchinductor"}


def bare_start(config, cache_root, engine_args=(), env=None):
    """Bare vLLM's OpenAI server with the config's model, engine arguments and variables (and `env`); its
    milestones."""
    model = llm_config(config)["model_loading_config"]
    log = LOGS / f"vllm-{time.time():.0f}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server_env = {**engine_env(config), **compile_caches(cache_root), **(env or {})}
    engine = engine_cli_args(config) + list(engine_args)
    started = time.time()
    with servers.bare_vllm(ROOT / model["model_source"], model["model_id"], engine, log, env=server_env) as (
        _,
        seconds,
    ):
        answered = started + seconds
    moments = {phase: first_time([log], pattern) for phase, source, pattern in MILESTONES if source == "vllm"}
    moments["OpenAI server: set up"] = first_time([log], READY["bare"])
    moments["first request answered"] = answered
    return started, moments


def tutorial_start(config_path, cache_root, extra_env=None):
    """The notebook's steps on a new cluster (Ray's files in a temp folder of their own), `serve run` given the Serve
    config file at `config_path` (the notebook's application, as serve_tiny_reasoner.yaml holds it); their
    milestones."""
    moments = {}
    started = time.time()
    with servers.RayCluster({**compile_caches(cache_root), **(extra_env or {})}) as cluster:
        cluster.start_ray()
        moments["ray start (local_cluster.py start)"] = time.time()
        cluster.start_serve()
        moments["serve start: Serve's controller, HAProxy"] = time.time()
        cluster.run("serve", "run", str(config_path), "--non-blocking", timeout=900)
        run_returned = time.time()
        answered = started + servers.wait_for_answer(servers.SERVE_URL, MODEL_ID, started)
        logs = cluster.logs
        files = {
            "controller": list(logs.glob("serve/controller_*.log")),
            "replica": list(logs.glob("serve/replica_*LLMServer*.log")),
            "vllm": list(logs.glob("worker-*.out")) + list(logs.glob("worker-*.err")),
        }
        for phase, source, pattern in MILESTONES:
            if pattern:
                moments[phase] = first_time(files[source], pattern)
        moments["OpenAI server: set up"] = first_time(files["replica"], READY["replica"])
        moments["first request answered"] = answered
        return started, moments, round(run_returned - started, 2)


def table(results):
    """Seconds per phase (rows) for each start (columns), then the total and the part only Ray has."""
    starts = results["starts"]
    lines = ["| phase | " + " | ".join(starts) + " |", "| --- | " + " | ".join("---:" for _ in starts) + " |"]
    for phase, _, _ in MILESTONES:
        cells = []
        for start in starts.values():
            seconds = {p: s for p, _, s in start["phases"]}.get(phase)
            cells.append(f"{seconds:.1f}" if seconds is not None else "")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append(
        "| **first answer after** | " + " | ".join(f"**{s['total_s']:.0f} s**" for s in starts.values()) + " |"
    )
    lines.append(
        "| of that, phases only Ray has | " + " | ".join(f"{s['ray_only_s']:.0f} s" for s in starts.values()) + " |"
    )
    return "\n".join(lines)


def timeline_plot(results, path):
    """One bar per start, its phases side by side in time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip([p for p, _, _ in MILESTONES], plt.get_cmap("tab20").colors))
    fig, axis = plt.subplots(figsize=(13, 1.2 + 0.7 * len(results["starts"])))
    for row, start in enumerate(results["starts"].values()):
        for phase, begin, seconds in start["phases"]:
            axis.broken_barh([(begin, seconds)], (row - 0.35, 0.7), color=colours[phase], edgecolor="white")
    axis.set_yticks(range(len(results["starts"])), list(results["starts"]))
    axis.invert_yaxis()
    axis.set_xlabel("seconds from the first command to the first answer")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in colours.values()]
    axis.legend(handles, list(colours), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title("Cold start, phase by phase (from Ray's and vLLM's log lines)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(settings):
    """Every start of `runs` below, each timed phase by phase until the model answered."""
    config = yaml.safe_load(settings.config.read_text())
    starts = {}
    with tempfile.TemporaryDirectory(prefix="vllm-caches-") as caches:  # each start below begins with empty ones
        bare_cache, aot_cache, eager_cache, ray_cache = (Path(caches, name) for name in ("bare", "aot", "eager", "ray"))
        aot = {"VLLM_USE_AOT_COMPILE": "1"}  # vLLM 0.29's default, which the config turns off on CPU
        runs = [
            ("bare vLLM", lambda: bare_start(config, bare_cache)),
            ("bare vLLM, second start", lambda: bare_start(config, bare_cache)),
            ("bare vLLM, AOT cache", lambda: bare_start(config, aot_cache, env=aot)),
            ("bare vLLM, AOT cache, second start", lambda: bare_start(config, aot_cache, env=aot)),
            ("bare vLLM, enforce_eager", lambda: bare_start(config, eager_cache, ["--enforce-eager"])),
            ("tutorial", lambda: tutorial_start(settings.config, ray_cache)),
            ("tutorial, second start", lambda: tutorial_start(settings.config, ray_cache)),
        ]
        for name, start in runs:
            started, moments, *serve_run = start()
            timeline = phases(started, moments)
            total = sum(seconds for _, _, seconds in timeline)
            ray_only = sum(seconds for phase, _, seconds in timeline if phase in RAY_ONLY)
            starts[name] = {"total_s": round(total, 2), "ray_only_s": round(ray_only, 2), "phases": timeline}
            if serve_run:
                starts[name]["serve_run_returned_s"] = serve_run[0]
            print(
                f"{name:28} first answer after {total:6.1f} s"
                + "".join(f"\n  {p:45} {s:6.1f} s" for p, _, s in timeline)
            )
    return {"config": settings.config.name, "starts": starts}


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Settings.config)
    parser.add_argument("--out", type=Path, default=Settings.out)
    settings = Settings(**vars(parser.parse_args()))
    results = save(settings.out, settings, run(settings))
    timeline_plot(results, settings.out.with_suffix(".png"))
    print(f"wrote {settings.out} and {settings.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
