"""The servers that the benchmark and the tests run against, started and always stopped again.

    with bare_vllm("tiny_reasoner") as (base_url, cold_start_s): ...              # vLLM's own OpenAI server
    with serve_deployment("serve_tiny_reasoner.yaml") as (base_url, cold_start_s): ...   # the tutorial's way

"Ready" means the model answered a real request: Serve lists a model on /v1/models even when its engine failed.
Ray runs the way the notebook starts it: `python local_cluster.py start` (in a process session of its own, stopped
by `python local_cluster.py stop`: nothing else on the machine is touched) with the notebook's environment.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import yaml

from harness.config import CPU_CONFIG, MODEL_ID, ROOT, engine_cli_args, load, ray_logs

SERVE_URL = "http://127.0.0.1:8000/v1"
# What the notebook's setup cell sets for every `ray` and `serve` command (tests/test_generated_files.py keeps them
# equal): token authentication, Ray's servers on loopback, direct streaming behind HAProxy, HAProxy's reloads not
# cutting long chains, and a stopping replica's short wait for HAProxy.
TUTORIAL_RAY_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_MAXCONN": "4096",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "1800",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "10",
}
# Of those, the ones for a cluster of one machine: a cluster of several nodes (KubeRay's) keeps Ray's defaults.
ONE_MACHINE = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S")
# Ray Serve LLM's standard path: an OpenAI ingress replica relays the stream, Serve's proxy in front.
STANDARD_PATH = {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}


def interrupted(*_):
    raise KeyboardInterrupt


def stop_on_sigterm():
    """Make SIGTERM (a `timeout`, a scheduler, a CI runner) unwind like Ctrl-C: every `finally` runs (pytest ends its
    session the usual way), so the servers, clusters and nodes that the command started stop too."""
    signal.signal(signal.SIGTERM, interrupted)


def wait_for_answer(base_url, model, started, timeout=600, headers=None, alive=lambda: True):
    """Seconds from `started` (a time.time()) until `model` answers a one-token chat request."""
    while time.time() - started < timeout:
        if not alive():
            raise RuntimeError(f"the server behind {base_url} exited or failed to deploy")
        try:
            reply = httpx.post(
                f"{base_url}/chat/completions",
                timeout=30,
                headers=headers,
                json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            )
            if reply.status_code == 200:
                return time.time() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{model} did not answer at {base_url} within {timeout}s")


def write_config(config):
    """A Serve config (a dict) written to a temp file, for `serve deploy`; returns its path."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    return f.name


def ray_temp_dir(prefix="ray-"):
    """A new folder for a Ray node's files. Under /tmp, and short: Ray's socket paths in it must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class RayCluster:
    """A Ray cluster on this machine, started and stopped with local_cluster.py, as the notebook does; as a context
    manager, stopped on leaving.

    env: added to this process's environment and the notebook's (TUTORIAL_RAY_ENV) for every command. Ray keeps its
    files in the folder that RAY_TMPDIR names there (the tests' session folder), else in a new one of this cluster's;
    `logs` is the cluster's log folder, read also after it stopped."""

    def __init__(self, env=None):
        env = {**os.environ, **TUTORIAL_RAY_ENV, **(env or {})}
        self.temp_dir = Path(env.get("RAY_TMPDIR") or ray_temp_dir())
        self.env = {**env, "RAY_TMPDIR": str(self.temp_dir)}
        self.logs = ray_logs(self.temp_dir)
        self.running = False

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()

    def run(self, *command, check=True, timeout=300):
        return subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout
        )

    def start(self, *ray_start_args, proxy_location="EveryNode"):
        self.start_ray(*ray_start_args)
        self.start_serve(proxy_location)

    def start_ray(self, *ray_start_args):
        """`python local_cluster.py start`, as the notebook runs it, with `ray start` arguments added."""
        self.running = True  # from here on, stop() has something to stop, even if the start fails half-way
        self.run(sys.executable, "local_cluster.py", "start", *ray_start_args)

    def start_serve(self, proxy_location="EveryNode"):
        # Serve's HTTP endpoint on loopback; with HAProxy its default would be every interface.
        self.run("serve", "start", "--http-host", "127.0.0.1", "--proxy-location", proxy_location)

    def stop(self):
        if self.running:
            self.run(sys.executable, "local_cluster.py", "stop", timeout=120)
            self.running = False

    def serve_status(self):
        return self.run("serve", "status", check=False).stdout

    def deploy(self, config, model=MODEL_ID, base_url=SERVE_URL, headers=None, timeout=600):
        """`serve deploy` a config (a file, or a dict written to one), then wait for a real answer; return the
        seconds that took. A deployment that fails ends the wait at once, with Serve's status in the error."""
        if isinstance(config, dict):
            config = write_config(config)
        started = time.time()
        self.run("serve", "deploy", str(config))
        last_check = [time.time()]

        def not_failed():  # ask Serve every 5 s, so that a failed deployment ends the wait at once
            if time.time() - last_check[0] < 5:
                return True
            last_check[0] = time.time()
            return "DEPLOY_FAILED" not in self.serve_status()

        try:
            return wait_for_answer(base_url, model, started, timeout, headers=headers, alive=not_failed)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n{self.serve_status()}") from None


# A worker node joins as `ray start --address` would, but with every address on loopback: the CLI refuses to add a
# node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on 127.0.0.1, so this starts the node the way Ray's own
# test clusters do (ray.cluster_utils). The node's processes outlive this launcher, in its process session.
START_WORKER_NODE = """
import sys
import ray._private.node
from ray._private.parameter import RayParams

gcs_address, temp_dir, num_cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = RayParams(gcs_address=gcs_address, node_ip_address="127.0.0.1", num_cpus=num_cpus, temp_dir=temp_dir,
                   node_manager_port=0, min_worker_port=0, max_worker_port=0)
params.dashboard_agent_listen_port = None  # a free port, not the head's
node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
print(node.node_id)
"""


class WorkerNode:
    """One more Ray node on this machine, joined to `cluster`, with Ray's files in a temp folder of its own; its
    processes (raylet, agents, replicas, engines) share one process session, so `die()` ends them all at once, as a
    machine that fails would, and nothing else. Start it while the machine is not busy: its raylet gives up when its
    agents take over 15 s to start, as they do next to an engine serving a load on 2 cores."""

    def __init__(self, cluster, num_cpus):
        self.temp_dir = ray_temp_dir("wn-")
        launcher = subprocess.Popen(
            [sys.executable, "-c", START_WORKER_NODE, "127.0.0.1:6379", str(self.temp_dir), str(num_cpus)],
            env={**cluster.env, "RAY_TMPDIR": str(self.temp_dir)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.session = launcher.pid  # it led the session that its node's processes inherit
        try:
            out, err = launcher.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            out, err = "", "no node after 120 s"
        if launcher.poll() != 0:
            self.die()
            raise RuntimeError(f"the worker node did not start:\n{err[-2000:]}")
        self.node_id = out.split()[-1]

    def processes(self):
        from local_cluster import session_processes

        return session_processes(self.session)

    def die(self):
        """SIGKILL every process of the node: no graceful shutdown, no goodbye to the head."""
        for process in self.processes():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(self.processes(), timeout=10)

    def logs(self):
        return Path(self.temp_dir) / "session_latest" / "logs"


@contextmanager
def serve_deployment(config, env=None, model=MODEL_ID, headers=None):
    """Start a cluster, deploy `config` and wait for a real answer; yield (base URL, seconds from the start of the
    cluster to that answer); always stop the cluster."""
    started = time.time()
    with RayCluster(env) as cluster:
        cluster.start()
        cluster.deploy(config, model=model, headers=headers)
        yield SERVE_URL, time.time() - started


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def bare_vllm(
    model_dir,
    served_name=MODEL_ID,
    engine_args=None,
    log_path=None,
    timeout=600,
    niceness=0,
    env=None,
):
    """vLLM's own OpenAI server on a loopback port, with `engine_args` (`vllm serve` flags; by default the CPU
    deployment's, its reasoning parser included).
    Yields (base_url, seconds until it answered); always stops it. niceness: run it below other processes (Ray runs
    its workers at 15). env: added to this process's environment for the server."""
    if engine_args is None:
        engine_args = engine_cli_args(load(CPU_CONFIG))
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ, **(env or {})}
    command = [
        "nice",
        "-n",
        str(niceness),
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *engine_args,
    ]
    log = open(log_path or os.devnull, "w")
    started = time.time()
    # A session of its own, so that stopping it also stops the engine processes it started, and nothing else.
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            cold_start = wait_for_answer(base_url, served_name, started, timeout, alive=lambda: server.poll() is None)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; see {log_path}") from None
        yield base_url, cold_start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
