"""Long chains through production operations: a scale-down, a redeploy and an overload, measured with Ray Serve's
defaults, with serve_qwq_32b.yaml's deployment options alone, and with the tutorial's settings (those options, and
tutorial_env.sh's HAProxy settings: how long its old process serves after a reload, and a stopping replica's drain).

    python -m benchmark.long_chains --out benchmark/results/long_chains.json   # about 35 minutes on 2 cores

The tutorial's CPU application on a cluster of 4 logical CPUs (two replicas of 2 CPUs fit), with the QwQ app's
autoscaling (1 to 2 replicas, target 16 requests per replica) and, but for the "defaults" run, its other deployment
options; but Serve removes a replica DOWNSCALE_DELAY_S after the load fell (600 s by default), to keep the run short.

Under a steady load of streamed chains of MAX_TOKENS tokens (ignore_eos: every chain is that long; the redeploy's
maybe longer, see REDEPLOY_CHAIN_S), the streams' first chains STAGGER_S apart:
1. scale-down: a deployment that starts with two replicas (or, with --scale-up, one, and UP_STREAMS streams until
   Serve has added the second), then DOWN_STREAMS streams, until Serve has removed a replica and every chain in
   flight when it told the replica to stop has ended;
2. redeploy: as a chain begins, `serve deploy` of the same config with one engine argument changed (max_num_seqs),
   which replaces the replica (checked: a new replica answers), under DOWN_STREAMS streams, until every chain in
   flight when Serve told the old replica to stop has ended;
3. overload: OVERLOAD_REQUESTS chains at once, held open until each has its status: how many refused, how fast, why.

Every chain is recorded: sent, ended, how it ended (see `ending`), which replica served it (Serve's replica logs, by
its x-request-id; "retried": in two); and when HAProxy stopped sending to each replica Serve stopped.
"""

import argparse
import asyncio
import copy
import dataclasses
import statistics
import time
from pathlib import Path

from harness import servers
from harness.config import CPU_CONFIG, QWQ_CONFIG, ROOT, llm_config, load
from harness.load import OUTCOMES, SteadyChains, ending, session, statuses_at_once, wait_for
from harness.logs import DEPLOYMENT, ServeLogs, served_by
from harness.results import save

# Chains of 3,900 tokens, as long in seconds as a reasoning model's here. The small model knows 1,024 positions; told it
# has 8,192, it writes noise past them, but each token costs the engine what a real chain's token does.
MAX_TOKENS = 3900
LONG_CONTEXT = {"max_model_len": 8192, "hf_overrides": {"max_position_embeddings": 8192}}
# The redeploy's stop comes ~30 s after its `serve deploy`: chains this long outlast Ray's 35 s grace after the stop.
REDEPLOY_CHAIN_S = 100
UP_STREAMS = 48  # three times the target of one replica: Serve asks for two
DOWN_STREAMS = 12  # below the target of one replica: Serve removes the second
DOWNSCALE_DELAY_S = 60  # long enough for every stream to have a chain in flight
STAGGER_S = 4  # between the streams' first chains, so that at any moment some chains have just begun
OVERLOAD_REQUESTS = 200
OVERLOAD_HOLD_S = 15  # the refusals came within 7 s also on busy cores; a queued chain waits minutes
STOP_OLD, HAPROXY_DROPPED = "Serve told the old replica to stop", "HAProxy stopped sending to it"

SETTINGS = dict(defaults="Ray's defaults", options="the deployment options alone", tutorial="the tutorial's settings")
# Ray 2.60's defaults for what tutorial_env.sh sets: HAProxy's old process is killed 120 s after a reload, and a
# stopping replica waits 30 s for the load balancer to stop sending it requests.
RAY_HAPROXY_ENV = {"RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "120", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30"}
LOAD = {"max_tokens": MAX_TOKENS, "ignore_eos": True, "up_streams": UP_STREAMS, "down_streams": DOWN_STREAMS}


@dataclasses.dataclass
class Settings:
    runs: tuple[str, ...] = tuple(SETTINGS)  # which of SETTINGS to run, each on a cluster of its own
    scale_up: bool = False  # start with one replica and let the load add one
    timeout_s: float = 900  # give up on a step after this
    downscale_delay_s: float = DOWNSCALE_DELAY_S
    redeploy_chain_s: float = REDEPLOY_CHAIN_S  # CI asks for less (3,900 tokens): they still outlast the grace period
    # The redeploy's chains sent after the old replica's stop; CI's are short: it only checks that they finish.
    after_stop_max_tokens: int | None = None
    out: Path = ROOT / "bench_results" / "long_chains.json"


def deployment_config(settings, initial_replicas, downscale_delay_s=DOWNSCALE_DELAY_S):
    """serve_tiny_reasoner.yaml with serve_qwq_32b.yaml's autoscaling, and with its other deployment options unless
    settings is "defaults" (Ray Serve's defaults)."""
    config = load(CPU_CONFIG)
    qwq = llm_config(load(QWQ_CONFIG))["deployment_config"]
    options = copy.deepcopy(qwq if settings != "defaults" else {"autoscaling_config": qwq["autoscaling_config"]})
    options["autoscaling_config"].update(downscale_delay_s=downscale_delay_s, initial_replicas=initial_replicas)
    llm = llm_config(config)
    llm["deployment_config"] = options
    llm["engine_kwargs"].update(LONG_CONTEXT)
    return config


async def scale_down(chains, logs, settings):
    """Until two replicas run (the deployment started with two, or UP_STREAMS made Serve add one), then DOWN_STREAMS
    until Serve removed one and the chains in flight then ended. Returns the replica stopped and the moments."""
    began = time.time()
    chains.set_streams(UP_STREAMS if settings.scale_up else DOWN_STREAMS, "scale-down")
    await wait_for(lambda: len(logs.started_replicas()) >= 2, settings.timeout_s, "a second replica")
    moments = {"two replicas running": time.time()}
    chains.set_streams(DOWN_STREAMS, "scale-down")
    await wait_for(lambda: logs.stopped_replica(began)[0], settings.timeout_s, "Serve stopping a replica")
    replica, moments["Serve told a replica to stop"] = logs.stopped_replica(began)
    moments["Serve decided to scale down"] = logs.first(rf"Downscaling Deployment\(name='{DEPLOYMENT}'", began)
    await chains.until_ended(chains.in_flight(moments["Serve told a replica to stop"]))
    moments[HAPROXY_DROPPED] = logs.haproxy_dropped(replica, moments["Serve told a replica to stop"])
    return replica, moments


def redeploy_max_tokens(chains, chain_s):
    """MAX_TOKENS, or more where chains ran faster than `chain_s` (a fast machine), up to the context's room."""
    seconds = [e["ended"] - e["sent"] for e in chains.log if ending(e) == "completed"]
    wanted = round(MAX_TOKENS * chain_s / statistics.median(seconds)) if seconds else MAX_TOKENS
    return min(LONG_CONTEXT["max_model_len"] - 300, max(MAX_TOKENS, wanted))


async def redeploy(chains, logs, cluster, config, settings):
    """`serve deploy` with max_num_seqs changed, under DOWN_STREAMS, until a new replica answers (a chain's first
    reply) and the chains in flight on the old one ended."""
    began = time.time()
    chains.set_streams(DOWN_STREAMS, "redeploy")
    changed = copy.deepcopy(config)
    llm = llm_config(changed)
    llm["engine_kwargs"]["max_num_seqs"] = 200  # a changed engine argument: a new replica
    llm["deployment_config"]["autoscaling_config"].pop("initial_replicas")  # else Serve starts that many again
    moments = {}
    # Deploy as a chain begins (within the 2 s a check every second needs), so that one chain in flight needs about a
    # whole chain's time after the stop. Right after the scale-down one does: the last chain's stream sent its next.
    await wait_for(lambda: time.time() - chains.log[-1]["sent"] < 2, settings.timeout_s, "a chain beginning")
    await asyncio.to_thread(cluster.run, "serve", "deploy", servers.write_config(changed))
    await wait_for(lambda: logs.stopped_replica(began)[0], settings.timeout_s, "Serve stopping the old replica")
    replica, moments[STOP_OLD] = logs.stopped_replica(began)
    chains.max_tokens = settings.after_stop_max_tokens or chains.max_tokens

    def new_replica_answering():  # a chain sent after HAProxy let go of the old replica got its 200: a new one has it
        dropped = logs.haproxy_dropped(replica, moments[STOP_OLD])
        return dropped and any(entry["sent"] > dropped and entry["status"] == 200 for entry in chains.log)

    await wait_for(new_replica_answering, settings.timeout_s, "a new replica answering")
    moments["a new replica answered"] = time.time()
    # `serve deploy` returns once the dashboard has the config; the controller logs when it applies it.
    moments["Serve applied the new config"] = logs.first(
        rf"Deploying new version of Deployment\(name='{DEPLOYMENT}'", began
    )
    await chains.until_ended(chains.in_flight(moments[STOP_OLD]))
    moments[HAPROXY_DROPPED] = logs.haproxy_dropped(replica, moments[STOP_OLD])
    return replica, moments


def summary(chains, event, replica, moments, served):
    """What happened to the chains of one event."""
    stop = next(at for name, at in moments.items() if name.startswith("Serve told"))
    entries = [entry for entry in chains.log if entry["event"] == event]
    in_flight, dropped = chains.in_flight(stop), moments.get(HAPROXY_DROPPED)
    completed = [round(e["ended"] - e["sent"], 1) for e in entries if ending(e) == "completed"]  # seconds each took
    cut = [entry for entry in entries if ending(entry) != "completed"][:20]
    moments = dict(sorted(((name, at) for name, at in moments.items() if at is not None), key=lambda m: m[1]))
    return {
        "replica_stopped": replica,
        "chains": {kind: sum(ending(e) == kind for e in entries) for kind in OUTCOMES},
        "in_flight_when_serve_told_the_replica_to_stop": {
            "count": len(in_flight),
            **{kind: sum(ending(e) == kind for e in in_flight) for kind in OUTCOMES},
            # How long the replica had to stay to finish them all: the grace period that this load needs.
            "seconds_the_last_ran_after_the_stop": round(max((e["ended"] for e in in_flight), default=stop) - stop, 1),
        },
        # What a stopping replica must wait for before it may go: Serve's drain period must cover it.
        "seconds_until_haproxy_dropped_it": dropped and round(dropped - stop, 2),
        "chain_seconds_max": max(completed, default=None),  # none, where every chain of the step was cut
        "retried": sum(1 for e in entries if len(served.get(e["id"], [])) > 1),
        "seconds": {name: round(at - min(moments.values()), 1) for name, at in moments.items()},
        "cut_chains": [{**e, "sent": round(e["sent"] - stop, 1), "ended": round(e["ended"] - stop, 1)} for e in cut],
    }


def progress(began, step):  # a run takes many minutes: seconds since the cluster's start, and the step done
    print(f"{time.time() - began:5.0f}s {step}", flush=True)


async def run_steps(cluster, logs, config, settings, began):
    async with session(1000) as client:
        chains = SteadyChains(client, MAX_TOKENS, STAGGER_S, DOWN_STREAMS)
        try:
            down = await scale_down(chains, logs, settings)
            progress(began, "scale-down: done")
            chains.max_tokens = redeploy_tokens = redeploy_max_tokens(chains, settings.redeploy_chain_s)
            deployed = await redeploy(chains, logs, cluster, config, settings)
            progress(began, "redeploy: done")
        finally:
            await chains.stop()
        overload = await statuses_at_once(client, OVERLOAD_REQUESTS, MAX_TOKENS, OVERLOAD_HOLD_S)
        progress(began, "overload: done")
    served = served_by([logs.folder])
    return {
        "scale-down": summary(chains, "scale-down", *down, served),
        "redeploy": {**summary(chains, "redeploy", *deployed, served), "max_tokens": redeploy_tokens},
        "overload": overload,
    }


def table(results):
    """The notebook's table: what each operation did to the chains, with Ray's defaults and the tutorial's settings."""
    runs = {SETTINGS[name]: run for name, run in results["runs"].items()}
    rows = ["| | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]

    def row(label, values):
        rows.append(f"| {label} | " + " | ".join(str(value) for value in values) + " |")

    for event, what in (("scale-down", "scale-down 2 → 1"), ("redeploy", "redeploy (`serve deploy`)")):
        steps = [run[event] for run in runs.values()]
        stopped = [step["in_flight_when_serve_told_the_replica_to_stop"] for step in steps]
        row(f"{what}: chains in flight when Serve told a replica to stop", [s["count"] for s in stopped])
        row("… of them cut", [s["cut"] for s in stopped])
        row("… seconds until the last of them ended", [s["seconds_the_last_ran_after_the_stop"] for s in stopped])
        row("… seconds until HAProxy stopped sending to it", [s["seconds_until_haproxy_dropped_it"] for s in steps])
        row("all chains of the step: cut", [step["chains"]["cut"] for step in steps])
        row("… dropped before their reply began", [step["chains"]["dropped"] for step in steps])
        row("… refused (503)", [step["chains"]["refused"] for step in steps])
    overloads = [run["overload"] for run in runs.values()]
    row(f"overload, {overloads[0]['requests']} chains at once: refused", [o["refused"] for o in overloads])
    row("… waiting in Serve's queue", [o["no_status"] for o in overloads])
    row("… slowest refusal (s)", [o["slowest_refusal_s"] or "–" for o in overloads])
    return "\n".join(rows)


def outcome(results):
    """What the notebook says of the runs, in numbers (tests/test_generated_files.py checks that it quotes this)."""
    defaults, options, tutorial = (results["runs"][name] for name in SETTINGS)

    def stopped(run, event, key):
        return run[event]["in_flight_when_serve_told_the_replica_to_stop"][key]

    def cut(run, in_flight=False):  # chains of both steps that broke off (of those in flight at a stop)
        return sum(stopped(run, e, "cut") if in_flight else run[e]["chains"]["cut"] for e in ("scale-down", "redeploy"))

    def cut_count(run):
        count = sum(run[event]["chains"]["cut"] for event in ("scale-down", "redeploy"))
        return "no chain was cut" if count == 0 else f"{count} chain{'s were' if count > 1 else ' was'} cut"

    seconds = tutorial["redeploy"]["seconds"]
    overload = tutorial["overload"]
    return (
        f"With Ray's defaults, Serve killed the stopping replica 35 s after it told it to stop, and with it "
        f"{stopped(defaults, 'scale-down', 'cut')} of the {stopped(defaults, 'scale-down', 'count')} chains in flight "
        f"at the scale-down and {stopped(defaults, 'redeploy', 'cut')} of the {stopped(defaults, 'redeploy', 'count')} "
        f"at the redeploy. With the deployment options alone Serve let the stopping replica finish its chains, but "
        f"HAProxy's old process closed its connections {options['haproxy_hard_stop_after_s']} s after a reload: "
        f"{cut(options)} chains broke off mid-stream, {cut(options, in_flight=True)} of them in flight at a stop. "
        f"With the tutorial's settings {cut_count(tutorial)}: the stopping replica stayed until its last "
        f"chain ended, {stopped(tutorial, 'scale-down', 'seconds_the_last_ran_after_the_stop')} s and "
        f"{stopped(tutorial, 'redeploy', 'seconds_the_last_ran_after_the_stop')} s after the stop. A redeploy of one "
        f"replica stops it before its successor starts: "
        f"{seconds['a new replica answered'] - seconds[STOP_OLD]:.0f} s passed from the stop to the new replica's "
        f"first answer, and {tutorial['redeploy']['chains']['refused']} requests got 503 meanwhile. Under the "
        f"overload, the tutorial's settings let {overload['accepted']} chains run, queued {overload['no_status']} and "
        f'refused {overload["refused"]} with 503 ("{overload["refusal_body"]}"), the slowest refusal after '
        f"{overload['slowest_refusal_s']} s; Ray's defaults took all {defaults['overload']['accepted']}."
    )


def haproxy_env(settings):
    """HAProxy's reload and drain settings: tutorial_env.sh's, or Ray's defaults."""
    tutorial = {name: servers.TUTORIAL_RAY_ENV[name] for name in RAY_HAPROXY_ENV}
    return tutorial if settings == "tutorial" else RAY_HAPROXY_ENV


def run_one(name, settings):
    """One of SETTINGS (`name`) on a cluster of its own: the scale-down, the redeploy and the overload."""
    env = haproxy_env(name)
    config = deployment_config(name, 1 if settings.scale_up else 2, settings.downscale_delay_s)
    began = time.time()
    with servers.RayCluster(env) as cluster:
        cluster.start("--num-cpus=4")
        progress(began, f"{name}: cluster started")
        cluster.deploy(config)
        progress(began, f"{name}: deployed, the model answered")
        results = asyncio.run(run_steps(cluster, ServeLogs(cluster.temp_dir), config, settings, began))
    progress(began, f"{name}: cluster stopped")
    return {
        "deployment_config": llm_config(config)["deployment_config"],
        "haproxy_hard_stop_after_s": int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]),
        "min_draining_period_s": float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]),
        **results,
    }


def run(settings):
    runs = {name: run_one(name, settings) for name in settings.runs}
    return {"cluster": "a cluster of 4 logical CPUs", "load": LOAD, "runs": runs}


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Settings.out)
    parser.add_argument("--settings", dest="runs", nargs="+", default=Settings.runs, choices=list(SETTINGS))
    parser.add_argument("--scale-up", action="store_true", help="start with one replica and let the load add one")
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=Settings.timeout_s, help="per step")
    parser.add_argument("--downscale-delay-s", type=float, default=Settings.downscale_delay_s)
    parser.add_argument("--redeploy-chain-s", type=float, default=Settings.redeploy_chain_s)
    parser.add_argument("--after-stop-max-tokens", type=int, default=Settings.after_stop_max_tokens)
    args = vars(parser.parse_args())
    settings = Settings(**{**args, "runs": tuple(args["runs"])})
    print(table(save(settings.out, settings, run(settings))))
    print(f"wrote {settings.out}")


if __name__ == "__main__":
    main()
