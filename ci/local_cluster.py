"""Start and stop the servers that the tests and the benchmark run against, and leave nothing running.

    with serve_deployment("serve_tiny_reasoner.yaml") as cold_start_s: ...   # ray start, serve deploy, first answer
    with bare_vllm("tiny_reasoner") as (base_url, cold_start_s): ...        # `vllm serve`'s own API server

"Ready" means the model answered a real request: Serve lists a model on /v1/models even when its engine failed.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVE_URL = "http://127.0.0.1:8000/v1"
# What the notebook's CPU mode sets before `ray start` (its MODE cell; tests/test_generated_files.py keeps them equal).
CPU_MODE_ENV = {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
# `ray`, `serve` and `python` come from the environment that runs this, activated or not.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]


def stop_ray():
    """Stop the local Ray cluster and everything it runs (Serve, vLLM engines), whatever state they are in.

    A plain `ray stop` lets each replica shut its vLLM engine down. `ray stop --force` alone kills the replicas with
    SIGKILL, and their engine processes (VLLM::EngineCore and its worker, 2.6 GB between them) live on as orphans;
    so force only what the plain stop left, then kill any engine process that survived.
    """
    for command in (["ray", "stop"], ["ray", "stop", "--force"]):
        try:
            subprocess.run(command, capture_output=True, timeout=120)
        except subprocess.TimeoutExpired:
            pass
    subprocess.run(["pkill", "-9", "-f", "^VLLM::|^ray::|raylet|gcs_server"], capture_output=True)


def wait_for_answer(base_url, model, started, timeout=600, headers=None, alive=lambda: True):
    """Seconds from `started` (a time.time()) until `model` answers a one-token chat request."""
    while time.time() - started < timeout:
        if not alive():
            raise RuntimeError(f"the server behind {base_url} exited or failed to deploy")
        try:
            reply = httpx.post(f"{base_url}/chat/completions", timeout=30, headers=headers, json={
                "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
            if reply.status_code == 200:
                return time.time() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{model} did not answer at {base_url} within {timeout}s")


def serve_status(env):
    return subprocess.run(["serve", "status"], env=env, capture_output=True, text=True).stdout


@contextmanager
def serve_deployment(config_file, env=None, ray_start_args=(), model="tiny-reasoner", headers=None):
    """`ray start`, `serve deploy config_file`, wait for a real answer; yield the seconds that took; always stop.
    Ray runs the way the notebook's CPU mode starts it, unless `env` says otherwise."""
    # Ray 2.60 protects a new cluster with a token; `ray` and `serve` send it only with RAY_AUTH_MODE=token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", **CPU_MODE_ENV, **(env or {})}
    stop_ray()
    started = time.time()
    try:
        subprocess.run(["ray", "start", "--head", "--disable-usage-stats", *ray_start_args], env=env, check=True,
                       capture_output=True, cwd=ROOT)
        subprocess.run(["serve", "deploy", str(config_file)], env=env, check=True, capture_output=True, cwd=ROOT)
        last_check = [time.time()]

        def not_failed():  # ask Serve every 5 s, so that a failed deployment ends the wait at once
            if time.time() - last_check[0] < 5:
                return True
            last_check[0] = time.time()
            return "DEPLOY_FAILED" not in serve_status(env)

        try:
            cold_start = wait_for_answer(SERVE_URL, model, started, headers=headers, alive=not_failed)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n{serve_status(env)}") from None
        yield cold_start
    finally:
        stop_ray()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def bare_vllm(model_dir, served_name="tiny-reasoner", extra_args=(), log_path=None, timeout=300, niceness=0):
    """vLLM's own OpenAI server on a loopback port, with the engine arguments of the tutorial's CPU deployment.
    Yields (base_url, seconds until it answered); always stops it. niceness: run it below other processes (Ray runs
    its workers at 15)."""
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ}
    command = ["nice", "-n", str(niceness), sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--reasoning-parser", "deepseek_r1", "--max-model-len", "1024", *extra_args]
    log = open(log_path or os.devnull, "w")
    started = time.time()
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
