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
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVE_URL = "http://127.0.0.1:8000/v1"
# What the notebook's setup cell sets for every `ray` and `serve` command (tests/test_generated_files.py keeps them
# equal): token authentication, Ray's servers on loopback, and direct streaming behind HAProxy.
TUTORIAL_RAY_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_MAXCONN": "4096",
}
# Ray Serve LLM's standard path: an OpenAI ingress replica relays the stream, Serve's proxy in front.
STANDARD_PATH = {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}


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


class RayCluster:
    """A Ray cluster on this machine, started and stopped with local_cluster.py, as the notebook does.

    env: added to this process's environment and the notebook's (TUTORIAL_RAY_ENV) for every command."""

    def __init__(self, env=None):
        self.env = {**os.environ, **TUTORIAL_RAY_ENV, **(env or {})}
        self.running = False

    def run(self, *command, check=True, timeout=300):
        return subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout
        )

    def start(self, *ray_start_args):
        self.running = True  # from here on, stop() has something to stop, even if the start fails half-way
        self.run(sys.executable, "local_cluster.py", "start", *ray_start_args)
        # Serve's HTTP endpoint on loopback; with HAProxy its default would be every interface.
        self.run("serve", "start", "--http-host", "127.0.0.1")

    def stop(self):
        if self.running:
            self.run(sys.executable, "local_cluster.py", "stop", timeout=120)
            self.running = False

    def serve_status(self):
        return self.run("serve", "status", check=False).stdout

    def deploy(self, config, model="tiny-reasoner", base_url=SERVE_URL, headers=None, timeout=600):
        """`serve deploy` a config (a file, or a dict written to one), then wait for a real answer; return the
        seconds that took. A deployment that fails ends the wait at once, with Serve's status in the error."""
        if isinstance(config, dict):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                yaml.safe_dump(config, f)
            config = f.name
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


@contextmanager
def serve_deployment(config, env=None, model="tiny-reasoner", headers=None):
    """Start a cluster, deploy `config` and wait for a real answer; yield (base URL, seconds from the start of the
    cluster to that answer); always stop the cluster."""
    cluster = RayCluster(env)
    started = time.time()
    try:
        cluster.start()
        cluster.deploy(config, model=model, headers=headers)
        yield SERVE_URL, time.time() - started
    finally:
        cluster.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def bare_vllm(
    model_dir,
    served_name="tiny-reasoner",
    engine_args=("--max-model-len", "1024"),
    log_path=None,
    timeout=600,
    niceness=0,
    env=None,
):
    """vLLM's own OpenAI server on a loopback port, with the deepseek_r1 parser and `engine_args`.
    Yields (base_url, seconds until it answered); always stops it. niceness: run it below other processes (Ray runs
    its workers at 15). env: added to this process's environment for the server."""
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
        "--reasoning-parser",
        "deepseek_r1",
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
