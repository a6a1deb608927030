"""api_key.py, the notebook's one switch for an API key (deploy `api_key:build_openai_app`), in each mode the README
offers: direct streaming (the README's sequence, pasted as written on a machine where Ray never ran, which also checks
the cluster token that `local_cluster.py start` makes there) and the standard path (direct streaming and
HAProxy off, on a cluster of 2 logical CPUs as the tutorial's is on this machine). In both, no key, a wrong key and
odd spellings of the paths are refused on every route; the right key gets through. And where a Hugging Face token in
a runtime_env shows up."""

import os
import re
import secrets
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from ci import follow_readme
from harness.config import CPU_CONFIG, MODEL_ID, ROOT, load
from harness.logs import controller_logs, first_time
from harness.servers import SERVE_URL, STANDARD_PATH, TUTORIAL_RAY_ENV, RayCluster, write_config
from tests.plugin import files_containing, session_ray_logs

LOGS = session_ray_logs()  # the tests' clusters (tests/plugin.py)
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "How many R's are in pop?"}]}
ROUTES = [  # (path, method, body)
    ("/v1/chat/completions", "POST", CHAT),
    ("/v1/chat/completions", "POST", {**CHAT, "stream": True}),
    ("/v1/completions", "POST", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}),
    ("/tokenize", "POST", {"model": MODEL_ID, "prompt": "Hi"}),
    ("/v1/models", "GET", None),
    ("/docs", "GET", None),
    ("/openapi.json", "GET", None),
    # Paths vLLM's own key (VLLM_API_KEY) leaves open: its SageMaker route, and its metrics.
    ("/invocations", "POST", CHAT),
    ("/metrics", "GET", None),
    # Odd spellings of the routes above, which a check on the path alone might let through.
    ("//v1/models", "GET", None),
    ("/V1/models", "GET", None),
    ("/./v1/models", "GET", None),
    ("/v1/%63hat/completions", "POST", CHAT),
]
SERVED_BY_VLLM = {path for path, _, _ in ROUTES[:9]}  # the routes as spelled: vLLM's own app serves them all


def keyed_app(app):
    """An application of a Serve config with the one switch: api_key.py's builder in place of Ray's."""
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    return {**app, "import_path": "api_key:build_openai_app"}


def statuses(base, key):
    """{(who, path, streamed): HTTP status} for every route, asked with no key, wrong keys and the right key."""
    found = {}
    for who, headers in [
        ("no key", {}),
        ("wrong key", {"Authorization": "Bearer FAKE_KEY"}),
        ("key without Bearer", {"Authorization": key}),
        ("right key", {"Authorization": f"Bearer {key}"}),
    ]:
        for path, method, body in ROUTES:
            reply = httpx.request(method, base + path, json=body, headers=headers, timeout=60)
            found[(who, path, bool(body and body.get("stream")))] = reply.status_code
            if who != "right key":
                assert "API key" in reply.text, (who, path, reply.text)
    print("\n" + "\n".join(f"{w:20} {p:24} stream={s!s:5} -> {status}" for (w, p, s), status in found.items()))
    # Serve's own pages, answered before the app, take no key (the README says so).
    for page in ("/-/healthz", "/-/routes"):
        assert httpx.get(SERVE_URL.removesuffix("/v1") + page).status_code == 200, page
    return found


def assert_key_holds(found, served_paths):
    """401 for every request without the right key; with it, never 401, and 200 on each route the mode serves."""
    wrong = {
        (who, path, streamed): status
        for (who, path, streamed), status in found.items()
        if (who != "right key" and status != 401)
        or (who == "right key" and (status == 401 or (path in served_paths and status != 200)))
    }
    assert not wrong, wrong


def readme_key_sequence():
    """Appendix A's block that deploys the tutorial's application with a key, as the README shows it."""
    blocks = follow_readme.fenced_blocks((ROOT / "README.md").read_text())
    return next(body for language, body, _ in blocks if language == "bash" and "api_key:build_openai_app" in body)


def fresh_terminal(home):
    """The environment of a new terminal on a machine where Ray never ran: a HOME without ~/.ray, none of the tutorial's
    variables set, and no cluster token but the one `local_cluster.py start` will make. vLLM's compile cache stays
    where it was (a cache: the engine starts as it would a second time, not differently)."""
    unset = ("API_KEY", "MODEL_ID", "BASE_URL", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return env | {"HOME": str(home), "XDG_CACHE_HOME": cache}


@contextmanager
def someone_elses_processes():
    """Processes named as Ray's and vLLM's are, that the tests did not start: a `ray stop` or a kill by name would end
    them; `local_cluster.py stop` must not."""
    names = ("raylet", "ray::ServeReplica:default:LLMServer", "VLLM::EngineCore", "gcs_server")
    decoys = [subprocess.Popen(["bash", "-c", f"exec -a '{name}' sleep 900"], start_new_session=True) for name in names]
    try:
        yield decoys
    finally:
        for decoy in decoys:
            decoy.kill()
            decoy.wait()  # reaped: no zombie left for the rest of the session


def test_the_readmes_key_sequence_on_a_fresh_machine_keeps_its_key_and_its_token(no_cluster, tmp_path):
    """The README's sequence pasted into the tutorial's terminal (tutorial_env.sh sourced, no key set) on a machine
    without ~/.ray, direct streaming: its curl without the key gets 401 and client.py answers; every route refuses no
    key, a wrong key and odd spellings, and vLLM's own server in the replica answers the right key. The cluster token
    that `local_cluster.py start` made is readable by its owner alone, refused when another is sent, and shown nowhere;
    `local_cluster.py stop` ends the cluster and nothing else, even processes named as Ray's are."""
    sequence = readme_key_sequence()
    assert "api_key:build_openai_app" in sequence and sequence.endswith("python client.py\n")
    assert TUTORIAL_RAY_ENV["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "1"
    home = tmp_path / "home"
    home.mkdir()
    env, token_file = fresh_terminal(home), home / ".ray" / "auth_token"

    def terminal(commands, **kwargs):
        script = "set -euo pipefail\nsource tutorial_env.sh\n" + commands
        return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)

    with someone_elses_processes() as decoys:
        try:
            pasted = terminal(sequence + 'echo "key=$API_KEY"\n', timeout=900)
            print(pasted.stdout[-3000:])
            assert pasted.returncode == 0, pasted.stdout[-3000:] + pasted.stderr[-3000:]
            key = re.search(r"^key=(.+)$", pasted.stdout, re.MULTILINE)[1]
            assert "without the key: 401" in pasted.stdout
            assert "Reasoning:" in pasted.stdout and "Answer:" in pasted.stdout  # client.py, with the key
            assert pasted.stdout.count(key) == 1  # only the line above prints it
            token = token_file.read_text()
            assert re.fullmatch(r"[0-9a-f]{64}", token) and stat.S_IMODE(token_file.stat().st_mode) == 0o600
            refused = subprocess.run(
                ["ray", "status"], cwd=ROOT, env=env | {"RAY_AUTH_TOKEN": "0" * 64}, capture_output=True, text=True
            )
            assert refused.returncode != 0, refused.stdout

            # With the right key every route reaches vLLM's own server, which answers it.
            assert_key_holds(statuses(SERVE_URL.removesuffix("/v1"), key), served_paths=SERVED_BY_VLLM)
            assert_answered_directly(key)
            assert not files_containing(key, LOGS)  # the key is in no file the deployment wrote
        finally:
            # The cluster's processes end at once (a `serve shutdown` first would wait out the replica's 30 s drain).
            stopped = terminal("python local_cluster.py stop\n", timeout=300)
            (ROOT / "serve_with_key.yaml").unlink(missing_ok=True)  # what the sequence wrote
        assert "none left" in stopped.stdout, stopped.stdout + stopped.stderr
        assert all(decoy.poll() is None for decoy in decoys), "stop ended a process it did not start"
    outputs = [run.stdout + run.stderr for run in (pasted, refused, stopped)]
    assert not [text for text in outputs if token in text]
    assert files_containing(token, LOGS.parents[2], home, ROOT) == [str(token_file)]  # Ray's files, HOME, here


def assert_answered_directly(key):
    """A request took the direct path: the replica's own server answered (its log has the request), not Serve's proxy,
    the fallback behind HAProxy (whose log would have it too)."""
    request_id = "api-key-direct-" + secrets.token_hex(4)
    headers = {"Authorization": f"Bearer {key}", "x-request-id": request_id}
    assert httpx.post(f"{SERVE_URL}/chat/completions", json=CHAT, headers=headers, timeout=60).status_code == 200
    replica_logs = list(Path(LOGS, "serve").glob("replica_default_LLMServer*.log"))
    deadline = time.time() + 10  # a replica writes its access log line when the request ends
    while not files_containing(request_id, *replica_logs) and time.time() < deadline:
        time.sleep(0.5)
    assert replica_logs and files_containing(request_id, *replica_logs)
    proxy_logs = list(Path(LOGS, "serve").glob("proxy_*.log"))
    assert proxy_logs and not files_containing(request_id, *proxy_logs)


def test_a_token_in_runtime_env_stays_out_of_what_the_reader_sees_but_ray_logs_it(tutorial_app, shared_cluster):
    """The shared cluster's tutorial application carries an HF_TOKEN in its runtime_env, the way the README warns
    against: wait_for_model.py and `serve status` never show it; Ray writes it into its own logs (if Ray stops doing
    so, this fails, and the README's warning can go)."""
    wait = subprocess.run(
        [sys.executable, "wait_for_model.py"],
        env={**os.environ, **TUTORIAL_RAY_ENV},
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert wait.returncode == 0, wait.stderr[-3000:]
    status = shared_cluster.cluster.serve_status()
    assert "RUNNING" in status and shared_cluster.HF_TOKEN not in wait.stdout + wait.stderr + status
    assert files_containing(shared_cluster.HF_TOKEN, LOGS), "the token is in none of Ray's logs"


def test_standard_path_the_ingress_without_room_stops_the_wait_then_the_key_holds(no_cluster):
    # token_urlsafe begins with "-" one time in 64, as the README's key may; CI failed on it once (grep took the key
    # for an option), so this test uses such a key.
    key = "-" + secrets.token_urlsafe(24)
    cluster = RayCluster({**STANDARD_PATH, "API_KEY": key, "PYTHONPATH": str(ROOT)})
    config = load(CPU_CONFIG)
    config["applications"] = [keyed_app(config["applications"][0])]
    try:
        cluster.start("--num-cpus=2")  # as `local_cluster.py start` gives the tutorial's cluster on 2 cores
        # The tutorial's config as it is: the engine's placement takes both CPUs, and the ingress (api_key.py's
        # ApiKeyIngress) asks for one.
        deployed = time.time()
        cluster.run("serve", "deploy", write_config(config))
        env = {**cluster.env, "API_KEY": key, "MODEL_ID": MODEL_ID, "READY_TIMEOUT_S": "500"}
        wait = subprocess.run(
            [sys.executable, "wait_for_model.py"], env=env, cwd=ROOT, timeout=600, capture_output=True, text=True
        )
        ended = time.time()
        print(f"the wait ended {ended - deployed:.0f}s after the deploy, after:\n{wait.stdout}\n{wait.stderr[-1500:]}")
        assert wait.returncode == 1, wait.stdout[-2000:]
        assert "a replica of deployment 'ApiKeyIngress' of application 'default' needs {\"CPU\": 1}" in wait.stderr
        assert "num_cpus: 0" in wait.stderr  # and what to do
        # In its first round after Serve logged that the ingress waits to be scheduled (over 30 s after the deploy).
        warned = first_time(
            controller_logs(LOGS),
            r"'ApiKeyIngress' in application 'default' has 1 replicas that have taken more than \d+s to be scheduled",
            since=deployed - 1,
        )
        assert warned is not None, "Serve never said that the ingress waits to be scheduled"
        went_on = [int(s) for s in re.findall(r"^ *(\d+)s \{", wait.stdout, re.M) if deployed + int(s) > warned + 3]
        assert not went_on, (
            f"rounds went on at {went_on}s, after Serve said the ingress waits ({warned - deployed:.0f}s)"
        )
        print(f"Serve said the ingress waits {warned - deployed:.0f}s after the deploy")

        # The README's remedy: the ingress asks for no CPU of its own. Then the key holds on this path too.
        config["applications"][0]["args"]["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": 0}}
        cluster.deploy(config, headers={"Authorization": f"Bearer {key}"})
        # Ray's ingress serves the OpenAI routes and its docs; vLLM's /invocations and /metrics are not there, and
        # its /tokenize answers this body with 400 (past the key all the same).
        found = statuses(SERVE_URL.removesuffix("/v1"), key)
        assert_key_holds(found, served_paths=SERVED_BY_VLLM - {"/invocations", "/metrics", "/tokenize"})
        assert found[("right key", "/invocations", False)] == 404  # the standard ingress answered, not vLLM's app
        assert not files_containing(key, LOGS)
    finally:
        cluster.stop()
