"""api_key_middleware.py, deployed the way the notebook says, with direct streaming: only the right bearer token gets
through, on every path. The same deployment also carries an HF_TOKEN in its runtime_env (the way the README warns
against), to check where it shows up."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from harness.config import MODEL_ID, ROOT, app_llm_config, ray_logs
from harness.servers import TUTORIAL_RAY_ENV
from tests.plugin import files_containing

LOGS = ray_logs(os.environ["RAY_TMPDIR"])  # the tests' clusters (tests/plugin.py)
BASE = "http://127.0.0.1:8000/secure"


def test_no_key_or_a_wrong_key_gets_401_and_the_right_key_gets_200(shared_cluster):
    key = shared_cluster.API_KEY  # in the cluster's environment, as the notebook says to start Ray
    app = yaml.safe_load((ROOT / "serve_tiny_reasoner.yaml").read_text())["applications"][0]
    app["name"], app["route_prefix"] = "secure", "/secure"
    # The notebook's one line for the config file; the cluster runs direct streaming (tutorial_env.sh).
    assert TUTORIAL_RAY_ENV["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "1"
    app_llm_config(app)["engine_kwargs"]["middleware"] = ["api_key_middleware.RequireApiKey"]
    hf_token = "hf_canary_" + secrets.token_hex(8)
    app_llm_config(app)["runtime_env"]["env_vars"]["HF_TOKEN"] = hf_token
    shared_cluster.deploy(app)
    env = {"API_KEY": key, "MODEL_ID": MODEL_ID, "BASE_URL": f"{BASE}/v1"}
    # wait_for_model.py, like the clients, sends $API_KEY when it is set.
    wait = subprocess.run(
        [sys.executable, "wait_for_model.py"],
        env={**os.environ, **TUTORIAL_RAY_ENV, **env},
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert wait.returncode == 0, wait.stderr[-3000:]
    status = shared_cluster.cluster.serve_status()
    # What the notebook shows (wait_for_model.py's progress, `serve status`) never holds the Hugging Face token.
    assert hf_token not in wait.stdout + wait.stderr + status
    # What the README says of runtime_env: Ray writes the token in clear into its own logs (if Ray stops doing so,
    # this fails, and the README's warning can go).
    assert files_containing(hf_token, LOGS), "the token is in none of Ray's logs"

    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "How many R's are in pop?"}]}
    results = {}
    for name, headers in [
        ("no key", {}),
        ("wrong key", {"Authorization": "Bearer FAKE_KEY"}),
        ("key without Bearer", {"Authorization": key}),
        ("right key", {"Authorization": f"Bearer {key}"}),
    ]:
        for path, method, body in [
            ("/v1/chat/completions", "POST", chat),
            ("/v1/chat/completions", "POST", {**chat, "stream": True}),
            ("/v1/completions", "POST", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}),
            ("/tokenize", "POST", {"model": MODEL_ID, "prompt": "Hi"}),
            ("/v1/models", "GET", None),
            # Paths vLLM's own key (VLLM_API_KEY) leaves open: its SageMaker route, and its metrics.
            ("/invocations", "POST", chat),
            ("/metrics", "GET", None),
        ]:
            reply = httpx.request(method, BASE + path, json=body, headers=headers, timeout=60)
            results[(name, path, bool(body and body.get("stream")))] = reply.status_code
            if name != "right key":
                assert "API key" in reply.text, reply.text
    print(
        "\n"
        + "\n".join(
            f"{name:20} {path:22} stream={stream!s:5} -> {status}" for (name, path, stream), status in results.items()
        )
    )
    # With the right key every request reaches vLLM's server, which answers it.
    expected = {(n, p, s): (401 if n != "right key" else 200) for n, p, s in results}
    wrong = {k: status for k, status in results.items() if status != expected[k]}
    assert not wrong, wrong
    # The requests took the direct path: the replica's own server answered (its log has the request), not Serve's
    # proxy, the fallback behind HAProxy (whose log would have it too).
    request_id = "api-key-direct-" + secrets.token_hex(4)
    headers = {"Authorization": f"Bearer {key}", "x-request-id": request_id}
    assert httpx.post(BASE + "/v1/chat/completions", json=chat, headers=headers, timeout=60).status_code == 200
    replica_logs = list(Path(LOGS, "serve").glob("replica_secure_LLMServer*.log"))
    deadline = time.time() + 10  # a replica writes its access log line when the request ends
    while not files_containing(request_id, *replica_logs) and time.time() < deadline:
        time.sleep(0.5)
    assert replica_logs and files_containing(request_id, *replica_logs)
    proxy_logs = list(Path(LOGS, "serve").glob("proxy_*.log"))
    assert proxy_logs and not files_containing(request_id, *proxy_logs)
    # The key is in no file the deployment wrote.
    assert not files_containing(key, LOGS)
