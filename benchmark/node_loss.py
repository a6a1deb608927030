"""A node dies under load: what the clients saw, and how long the deployment took to recover.

    python -m benchmark.node_loss --out benchmark/results/node_loss.json   # about 6 minutes on 2 cores

Two Ray nodes on this machine, every address on loopback: the head (2 logical CPUs) and a worker node (2 logical
CPUs, Ray's files in a folder of its own), joined with the cluster token. The tutorial's CPU application runs two
replicas; a replica asks for 2 CPUs, so each node holds one. Serve's HTTP proxy (HAProxy) runs on the head only:
two proxies on one machine would want the same port. Then a spare node joins (2 CPUs, idle), where the replacement
replica can go, as on a cluster with room for it (an autoscaler adds such a node; here it joins before the load,
because a node starting next to the load on 2 cores misses Ray's 15 s start-up limit).

Under a steady load of CONCURRENCY streamed chains, at a moment when every stream has a chain in flight, every
process of the worker node is killed at once (SIGKILL, as a machine that fails). The load goes on, served by the
surviving replica alone, until outage_s after Ray marked the node dead; it pauses while the replacement replica starts
on the spare node (a real spare has CPUs of its own; here it would share the two cores with the load), and runs
again for after_s on both replicas.

Measured: every request (sent when, ended how, served by which replica, from Serve's logs by its x-request-id); the
time until Ray marks the node dead (the head's GCS log), until the replacement replica started and answered (its own
log); and what the surviving replica served alone.
"""

import argparse
import asyncio
import dataclasses
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import chains, report, servers
from harness.config import CPU_CONFIG, MODEL_ID, ROOT, llm_config, load
from harness.load import BROKEN, default_prompts, session, stream_chat
from harness.logs import ANSWERED, DEPLOYMENT, READY, first_time, replica_logs, served_by
from harness.results import save

CONCURRENCY = 4
MAX_TOKENS = 192  # with ignore_eos: every chain streams for about a second, so that some are in flight at the kill
PAUSE_S = 1.0  # between one stream's chains: a load that leaves the replacement replica CPU time to start on 2 cores
CPUS_PER_NODE = 2  # one replica of the tiny model (its engine and its actor) per node
# The tutorial's client (harness.chains): for each --client, whether each of its kinds of stream resumes.
RESUMING = {"plain": [False], "resuming": [True], "both": [False, True]}
NODE_DEAD = r"Node is dead"  # the GCS log line of a node it gave up on (its health check failed)


@dataclasses.dataclass
class Settings:
    warm_s: float = 20  # seconds of load before the kill
    outage_s: float = 30  # seconds of load after the node is marked dead
    after_s: float = 15  # seconds of load after the recovery
    timeout_s: float = 600  # give up on the recovery after this
    client: str = "benchmark"  # the benchmark's load, or resumable_stream.py's: "plain", "resuming" or "both"
    # Serve's proxy prefers a replica on its own node, so with it on the head few chains reach the worker's replica:
    # spread turns that off, as if each node had a proxy of its own.
    spread: bool = False
    out: Path = ROOT / "bench_results" / "node_loss.json"


def two_replica_config():
    """serve_tiny_reasoner.yaml with two replicas, the proxy on the head, and the model at an absolute path: a node
    loads the model from its own disk, so the files must be at that path on every node (the repository, here)."""
    config = load(CPU_CONFIG)
    config["proxy_location"] = "HeadOnly"
    llm = llm_config(config)
    llm["deployment_config"]["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2}
    llm["model_loading_config"]["model_source"] = str(ROOT / llm["model_loading_config"]["model_source"])
    return config


async def steady_load(log, stop, client="benchmark"):
    """CONCURRENCY streams, each sending its next chain PAUSE_S after the last ended, until `stop` is set. Every
    request is logged as {id, sent, ended, status, done, error} (times from time.time()). The client: the benchmark's
    load generator (192 tokens, ignore_eos), or the tutorial's own, on checkable questions, plain or resuming."""
    if client != "benchmark":  # "both": CONCURRENCY streams of each, side by side on the same replicas
        kinds = RESUMING[client]
        # Threads of their own: in asyncio's default pool (6 threads on 2 cores) they would keep out worker.die().
        with ThreadPoolExecutor(max_workers=CONCURRENCY * len(kinds)) as pool:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.gather(
                    *(
                        loop.run_in_executor(pool, chains.stream_chains, log, stop, resume, PAUSE_S)
                        for resume in kinds
                        for _ in range(CONCURRENCY)
                    )
                )
            finally:  # interrupted (Ctrl-C, SIGTERM): the threads end after their chain, and the cluster stops
                stop.set()
        return
    prompts = default_prompts(64)
    async with session(CONCURRENCY, timeout_s=600) as client:

        async def stream():
            while not stop.is_set():
                entry = {"id": f"nl-{len(log)}", "sent": time.time(), "status": None, "done": False, "error": None}
                log.append(entry)
                try:
                    result = await stream_chat(
                        client,
                        servers.SERVE_URL,
                        MODEL_ID,
                        prompts[len(log) % len(prompts)],
                        MAX_TOKENS,
                        {"ignore_eos": True},
                        headers={"x-request-id": entry["id"]},
                    )
                    entry.update(status=result["status"], done=result["done"])
                except BROKEN as error:  # a reset or a closed connection: the chain was cut
                    entry["error"] = f"{type(error).__name__}: {error}"[:200]
                entry["ended"] = time.time()
                await asyncio.sleep(PAUSE_S)

        await asyncio.gather(*(stream() for _ in range(CONCURRENCY)))


PAUSED = "load paused for the replacement's cold start"


async def outage(log, settings, worker, moments, node_dead):
    """The load; the worker node killed after warm_s, at a moment when every stream has a chain in flight; the
    load goes on until outage_s after Ray marked the node dead, served by the surviving replica alone."""
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(log, stop, settings.client))
    await asyncio.sleep(settings.warm_s)
    waited = time.time()
    streams = CONCURRENCY * len(RESUMING.get(settings.client, [None]))
    while sum("ended" not in entry for entry in log) < streams and time.time() - waited < 30:
        await asyncio.sleep(0.05)
    moments["worker node killed"] = time.time()
    await asyncio.to_thread(worker.die)
    while not node_dead():
        await asyncio.sleep(1)
    await asyncio.sleep(settings.outage_s)
    stop.set()
    await load
    moments[PAUSED] = time.time()


async def load_for(log, seconds, client):
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(log, stop, client))
    await asyncio.sleep(seconds)
    stop.set()
    await load


def kill_and_recover(cluster, worker, spare, settings):
    """The load, the kill and the recovery; every request, and the moments of it all (time.time())."""
    log, moments = [], {}
    gcs_logs = list(cluster.logs.glob("gcs_server*.out"))

    def find(moment, files, pattern):
        at = moments.get(moment) or first_time(files, pattern, since=moments["worker node killed"])
        if at is not None:
            moments[moment] = at
        return at

    asyncio.run(outage(log, settings, worker, moments, lambda: find("node marked dead", gcs_logs, NODE_DEAD)))
    # The replacement's cold start, with the load paused: a real spare node has CPUs of its own; here the new
    # replica would share two cores with the load and the surviving engine, and take minutes longer (seen: 405 s).
    deadline = time.time() + settings.timeout_s
    while not find("replacement replica started", replica_logs([spare.logs()]), READY["replica"]):
        if time.time() > deadline:
            return log, moments
        time.sleep(1)
    asyncio.run(load_for(log, settings.after_s, settings.client))  # the load again, on both replicas
    controller = list((cluster.logs / "serve").glob("controller_[0-9]*"))
    find("Serve saw its replica die and asked for a new one", controller, rf"Replica\(.*'{DEPLOYMENT}'.*crashed")
    find("replacement replica began initializing", replica_logs([spare.logs()]), r"Started initializing replica")
    find("replacement replica answered", replica_logs([spare.logs()]), ANSWERED)
    return log, moments


def summarize(log, moments, served, survivor):
    killed = moments["worker node killed"]
    paused = moments.get(PAUSED, killed)
    failed = [entry for entry in log if not entry["done"]]
    in_flight = [entry for entry in log if entry["sent"] <= killed < entry["ended"]]
    return {
        "killed_at": killed,
        "requests": len(log),
        "completed": len(log) - len(failed),
        "failed": len(failed),
        "in_flight_at_the_kill": len(in_flight),
        "in_flight_at_the_kill_completed_by_the_survivor": sum(served.get(e["id"]) == survivor for e in in_flight),
        "failed_sent_after_the_kill": sum(entry["sent"] > killed for entry in failed),
        "failed_that_the_survivor_served": sum(served.get(entry["id"]) == survivor for entry in failed),
        "completed_by_the_survivor_alone": sum(
            1 for e in log if e["done"] and served.get(e["id"]) == survivor and killed < e["ended"] <= paused
        ),
        "completed_by_the_replacement": sum(
            1 for e in log if e["done"] and served.get(e["id"]) not in (None, survivor) and e["sent"] > paused
        ),
        "seconds_after_the_kill": {
            name: round(moments[name] - killed, 1)
            for name in sorted(moments, key=moments.get)  # in the order they happened
            if name != "worker node killed"
        },
        # Every request: [id, sent and ended (seconds after the kill), completed, the replica that served it]
        "request_log": [
            [e["id"], round(e["sent"] - killed, 2), round(e["ended"] - killed, 2), e["done"], served.get(e["id"])]
            for e in log
        ],
        "failed_requests": [{**e, "sent": e["sent"] - killed, "ended": e["ended"] - killed} for e in failed],
    }


def outcome(results):
    """What the notebook says of a run, in numbers (tests/test_generated_files.py checks that it quotes this)."""
    moments = results["seconds_after_the_kill"]
    after_the_kill = sum(1 for _, sent, _, _, _ in results["request_log"] if sent > 0)
    began = moments.get("replacement replica began initializing")
    started = moments.get("replacement replica started")
    return (
        f"Of the {results['in_flight_at_the_kill']} chains in flight at the kill, the "
        f"{results['in_flight_at_the_kill_completed_by_the_survivor']} on the surviving replica finished; "
        f"{results['failed']} broke off, those on the dead node. Of the {after_the_kill} requests sent after the "
        f"kill, {results['failed_sent_after_the_kill']} failed: the surviving replica alone answered "
        f"{results['completed_by_the_survivor_alone']} chains until the pause. The replacement began initializing "
        f"{began} s after the kill, when the load paused (on two shared cores the load held it back), and was up "
        f"{round(started - began, 1) if began and started else None} s later; then it answered "
        f"{results['completed_by_the_replacement']} of the chains that followed."
    )


def table(results):
    return report.moments_table(results["seconds_after_the_kill"], "the worker node was killed")


def run(settings):
    """A head, a worker node and a spare; the load, the kill and the recovery; what came of each request."""
    prefer_local = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"} if settings.spread else {}
    cluster = servers.RayCluster(prefer_local)
    head_logs = cluster.logs
    workers = []
    try:
        cluster.start(f"--num-cpus={CPUS_PER_NODE}", proxy_location="HeadOnly")
        workers.append(servers.WorkerNode(cluster, CPUS_PER_NODE))
        started = time.time()
        cluster.deploy(two_replica_config())
        first_answer_s = time.time() - started

        def both_replicas_up():  # the deploy's wait needs one replica's answer; the load needs both
            logs = replica_logs([head_logs, workers[0].logs()])
            return len(logs) >= 2 and all(first_time([path], READY["replica"]) for path in logs)

        while not both_replicas_up():
            if time.time() - started > settings.timeout_s:
                raise RuntimeError(f"the second replica did not start:\n{cluster.serve_status()}")
            time.sleep(2)
        (survivor,) = {re.search(r"_(\w+)\.log$", p.name)[1] for p in replica_logs([head_logs])}
        workers.append(servers.WorkerNode(cluster, CPUS_PER_NODE))  # the spare
        log, moments = kill_and_recover(cluster, *workers, settings)
        served = {request: by[0] for request, by in served_by([head_logs] + [w.logs() for w in workers]).items()}
    finally:
        for worker in workers:
            worker.die()
        cluster.stop()

    results = {
        "cluster": f"two Ray nodes of {CPUS_PER_NODE} logical CPUs each, on loopback",
        "config": "serve_tiny_reasoner.yaml with 2 replicas (one per node) and proxy_location: HeadOnly",
        "nodes": "head and worker with a replica each; a spare node, idle, joined before the load",
        "proxy_prefers_the_replica_on_its_node": not settings.spread,
        "load": {"concurrency": CONCURRENCY, "max_tokens": MAX_TOKENS, "ignore_eos": True, "pause_s": PAUSE_S}
        if settings.client == "benchmark"
        else {"client": settings.client, "concurrency": CONCURRENCY, "questions": "harness.chains", "pause_s": PAUSE_S},
        "seconds_from_the_deploy_to_a_first_answer": round(first_answer_s, 1),
        **summarize(log, moments, served, survivor),
    }
    if settings.client != "benchmark":
        results["in_flight_chains"] = chains.in_flight_outcomes(log, moments["worker node killed"])
    return results


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Settings.out)
    parser.add_argument("--warm-s", type=float, default=Settings.warm_s, help="seconds of load before the kill")
    parser.add_argument(
        "--outage-s", type=float, default=Settings.outage_s, help="seconds of load after the node is marked dead"
    )
    parser.add_argument("--after-s", type=float, default=Settings.after_s, help="seconds of load after the recovery")
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=Settings.timeout_s, help="then give up")
    parser.add_argument("--client", choices=["benchmark", "plain", "resuming", "both"], default=Settings.client)
    parser.add_argument("--spread", action="store_true", help="no preference for the replica on the proxy's node")
    settings = Settings(**vars(parser.parse_args()))
    results = save(settings.out, settings, run(settings))
    print(table(results))
    print({key: value for key, value in results.items() if key not in ("request_log", "failed_requests")})
    print(f"wrote {settings.out}")
    if "replacement replica answered" not in results["seconds_after_the_kill"]:
        sys.exit("the deployment did not recover: see the moments above")


if __name__ == "__main__":
    main()
