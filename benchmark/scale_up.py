"""Scale-up, measured: from the load that makes Serve add a second replica to that replica's first answer.

    python -m benchmark.scale_up --out benchmark/results/scale_up.json   # about 10 minutes on 2 cores

The tutorial's CPU application with the QwQ app's autoscaling (serve_qwq_32b.yaml: 1 to 2 replicas, its
target_ongoing_requests, Serve's default delays) on a cluster of 4 logical CPUs, so that a second replica of 2 CPUs
fits. On 2 cores the two replicas share them, and the new one starts next to one that is serving the load: its cold
start is slower than on a machine with room for it, which makes this an upper bound for the same model.

The load: CONCURRENCY streams at a time until the new replica has answered a request. The moments, from Serve's own
logs: the controller's "Upscaling ... from 1 to 2 replicas", its "Replica(...) started successfully", and the first
request the new replica's log shows answered (a stream is logged when it ends).
"""

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

from harness import report, servers
from harness.config import CPU_CONFIG, MODEL_ID, QWQ_CONFIG, ROOT, llm_config, load
from harness.load import default_prompts, session, stream_chat
from harness.logs import DEPLOYMENT, ServeLogs
from harness.results import save

CONCURRENCY = 32  # twice the target of one replica: Serve asks for two
MAX_TOKENS = 64  # short requests: the log shows a request when it ends


@dataclasses.dataclass
class Settings:
    timeout_s: float = 900  # give up on the second replica after this
    out: Path = ROOT / "bench_results" / "scale_up.json"


def scaled_config():
    """serve_tiny_reasoner.yaml with the autoscaling of serve_qwq_32b.yaml."""
    config = load(CPU_CONFIG)
    qwq = load(QWQ_CONFIG)
    autoscaling = llm_config(qwq)["deployment_config"]["autoscaling_config"]
    llm_config(config)["deployment_config"]["autoscaling_config"] = autoscaling
    return config, autoscaling


async def load_until(base_url, done, timeout_s):
    """Keep CONCURRENCY streams going until `done()` or `timeout_s`; return how many ended, and how many failed."""
    prompts = default_prompts(CONCURRENCY * 4)
    counts = {"ok": 0, "failed": 0}
    deadline = time.time() + timeout_s
    finished = asyncio.Event()

    async def watch():  # `done()` reads Serve's logs: once a second, not after every request of every stream
        while not done() and time.time() < deadline:
            await asyncio.sleep(1)
        finished.set()

    async with session(CONCURRENCY, timeout_s=600) as client:

        async def stream(worker):
            sent = 0
            while not finished.is_set():
                prompt = prompts[(worker + sent * CONCURRENCY) % len(prompts)]
                result = await stream_chat(client, base_url, MODEL_ID, prompt, MAX_TOKENS, {"ignore_eos": True})
                counts["ok" if result["status"] == 200 and result["done"] else "failed"] += 1
                sent += 1

        await asyncio.gather(watch(), *(stream(worker) for worker in range(CONCURRENCY)))
    return counts


class ReplicaLogs(ServeLogs):
    """The moments of a scale-up in Serve's logs."""

    def upscaled(self):
        return self.first(rf"Upscaling Deployment\(name='{DEPLOYMENT}'.* from 1 to 2 replicas")

    def new_replica(self, first_replica):
        """The id of the replica the upscale started, and when it started successfully."""
        return next(((id_, at) for id_, at in self.started_replicas() if id_ != first_replica), (None, None))


def table(results):
    """The notebook's table of a scale-up: each moment, seconds after the load started."""
    return report.moments_table(results["seconds_after_the_load_started"], "the load started")


def run(settings):
    """One scale-up on a cluster of its own: the moments, the requests, and which replica answered how many."""
    config, autoscaling = scaled_config()
    cluster = servers.RayCluster()
    logs = ReplicaLogs(cluster.temp_dir)
    with cluster:
        cluster.start("--num-cpus=4")
        cluster.deploy(config)
        ((first_replica, _),) = logs.started_replicas()

        def second_replica_answered():
            replica, _ = logs.new_replica(first_replica)
            return replica is not None and logs.first_answer(replica) is not None

        load_started = time.time()
        counts = asyncio.run(load_until(servers.SERVE_URL, second_replica_answered, settings.timeout_s))
        load_ended = time.time()
        replica, started_at = logs.new_replica(first_replica)
        moments = {
            "Serve decides to add a replica": logs.upscaled(),
            "the new replica started (Ray Serve LLM and vLLM cold start)": started_at,
            "the new replica answered its first request": logs.first_answer(replica) if replica else None,
        }
        served = {"first": logs.answers(first_replica), "new": logs.answers(replica) if replica else 0}

    return {
        "cluster": "a cluster of 4 logical CPUs",
        "config": "serve_tiny_reasoner.yaml with serve_qwq_32b.yaml's autoscaling_config",
        "autoscaling_config": autoscaling,
        "load": {"concurrency": CONCURRENCY, "max_tokens": MAX_TOKENS, "seconds": round(load_ended - load_started, 1)},
        "requests": counts,
        "requests_answered_by_replica": served,
        "seconds_after_the_load_started": {
            name: round(moment - load_started, 1) if moment else None for name, moment in moments.items()
        },
    }


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Settings.out)
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=Settings.timeout_s, help="then give up")
    settings = Settings(**vars(parser.parse_args()))
    results = save(settings.out, settings, run(settings))
    print(table(results))
    print(
        f"requests: {results['requests']}; answered by the first / the new replica (from their logs): "
        f"{results['requests_answered_by_replica']}"
    )
    print(f"wrote {settings.out}")
    if None in results["seconds_after_the_load_started"].values():
        sys.exit("the second replica did not answer: see the moments above")


if __name__ == "__main__":
    main()
