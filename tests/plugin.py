"""The tests' setup, loaded as a pytest plugin (pyproject.toml) so that it covers the notebook too: Ray clusters of the
tests' own, and nothing left running or touched outside what the tests started. The notebook gets nothing a reader's
Jupyter lacks: no PATH, none of the tutorial's settings (it sources tutorial_env.sh itself, and its mode is
TUTORIAL_DEVICE as the reader sets it, cpu by default); only where Ray keeps its files and token, below.

- Ray keeps its files in a temp folder of this test session (RAY_TMPDIR), and every `ray` and `serve` command uses a
  cluster token made for this session (RAY_AUTH_TOKEN_PATH): the tests never read or write ~/.ray, and never
  connect to a cluster they did not start.
- Clusters are started and stopped with local_cluster.py: by process session, never by name.
- The tutorial's ports must be free (see PORTS); the session stops at once, naming what holds one, if not.
"""

import os
import secrets
import subprocess
import sys
import time

import psutil
import pytest

from harness.config import CPU_CONFIG, PORTS, ROOT, llm_config, load, ray_logs
from harness.servers import SERVE_URL, RayCluster, ray_temp_dir, stop_on_sigterm

# Set in pytest_configure: nothing happens when this module is imported.
SESSION_DIR = TOKEN_FILE = None


def ports_in_use():
    held = {}
    for connection in psutil.net_connections("inet"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in PORTS:
            try:
                owner = " ".join(psutil.Process(connection.pid).cmdline())[:80] if connection.pid else "?"
            except psutil.NoSuchProcess:
                owner = "?"
            held[connection.laddr.port] = owner
    return held


def files_containing(secret, *folders):
    """Every file under `folders` (not .venv or .git) that holds `secret`: the one check for a token or key left
    behind. Fails if grep cannot search (exit status 2), rather than finding nothing."""
    found = subprocess.run(
        ["grep", "-rlF", "--exclude-dir=.venv", "--exclude-dir=.git", "-e", secret, *map(str, folders)],
        capture_output=True,
        text=True,
    )
    assert found.returncode in (0, 1), found.stderr  # 0: found, 1: searched and found nothing
    return found.stdout.split()


def session_ray_logs():
    """The log folder of this test session's Ray clusters (they keep their files in SESSION_DIR)."""
    return ray_logs(SESSION_DIR)


def pytest_configure(config):
    global SESSION_DIR, TOKEN_FILE
    # A `timeout` (ci/gpu_runner.sh, a CI runner) sends SIGTERM, which would end pytest without any teardown.
    stop_on_sigterm()
    SESSION_DIR = ray_temp_dir("tutorial-tests-")
    TOKEN_FILE = SESSION_DIR / "auth_token"
    os.environ.update({"RAY_TMPDIR": str(SESSION_DIR), "RAY_AUTH_TOKEN_PATH": str(TOKEN_FILE)})


def pytest_sessionstart(session):
    TOKEN_FILE.write_text(secrets.token_hex(32))
    TOKEN_FILE.chmod(0o600)


def pytest_collection_finish(session):
    if all(item.get_closest_marker("fast") for item in session.items):
        return  # the fast tests start no Ray
    held = ports_in_use()
    if held:
        pytest.exit(
            "The tests start the tutorial's Ray cluster and need these ports free:\n"
            + "\n".join(f"  {port} ({PORTS[port]}): held by {owner}" for port, owner in held.items())
            + "\nStop what holds them (the tests never stop or use a cluster they did not start).",
            returncode=3,
        )


class SharedCluster:
    """One Ray cluster for every test that can share it, started at first use, with the tutorial's application
    (serve_tiny_reasoner.yaml) and whatever other applications a test deploys beside it.

    The cluster reports metrics every second."""

    METRICS_PORT = 8085
    # A Hugging Face token in the tutorial application's runtime_env, the way the README warns against: where it shows
    # up is checked (tests/test_api_key.py). The small model is local, so nothing uses it.
    HF_TOKEN = "hf_canary_" + secrets.token_hex(8)

    def __init__(self):
        self.cluster = None
        self.deployed = None

    def deploy(self, *extra_apps, headers=None):
        """Deploy the tutorial's application and `extra_apps` (dicts of a Serve config's `applications`), and wait
        until the tutorial's model answers. Nothing happens if exactly that is deployed already."""
        tutorial = self.tutorial_config()
        config = {**tutorial, "applications": tutorial["applications"] + list(extra_apps)}
        if config == self.deployed:
            return
        if self.cluster is None:
            self.cluster = RayCluster({"RAY_metrics_report_interval_ms": "1000"})
            # Four logical CPUs on two cores: room for a second application's engine beside the tutorial's.
            self.cluster.start(f"--metrics-export-port={self.METRICS_PORT}", "--num-cpus=4")
        self.deployed = None
        self.cluster.deploy(config)
        # Serve stops the applications that this config drops after the deploy returns: an engine of theirs that is
        # still starting would take the cores from the next test.
        deadline = time.time() + 120
        while "DELETING" in self.cluster.serve_status() and time.time() < deadline:
            time.sleep(2)
        self.deployed = config

    def tutorial_config(self):
        """serve_tiny_reasoner.yaml as this cluster deploys it: with HF_TOKEN in its runtime_env."""
        config = load(CPU_CONFIG)
        llm_config(config)["runtime_env"]["env_vars"]["HF_TOKEN"] = self.HF_TOKEN
        return config

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()
        self.cluster = self.deployed = None


SHARED = SharedCluster()


@pytest.fixture(scope="session")
def shared_cluster():
    return SHARED


@pytest.fixture
def tutorial_app():
    """The tutorial's CPU deployment, answering at SERVE_URL (the OpenAI base URL)."""
    SHARED.deploy()
    return SERVE_URL


@pytest.fixture
def no_cluster():
    """For tests that start Ray the reader's way: the tutorial's ports must be free."""
    SHARED.stop()


def pytest_collection_modifyitems(items):
    """Within the files' order: first the fast tests, then what starts Ray the reader's way (the notebook, `no_cluster`
    tests), then what needs no Ray, then what shares the tests' cluster, which then starts once, and last what leaves
    broken applications on it: removing them would wait out their replicas' drain, and Serve retries their engines on
    the same cores. (`pytest -p randomly` shuffles after this: every test also runs in any order, starting the shared
    cluster again where needed.)"""

    def group(item):
        if item.get_closest_marker("fast"):
            return -1
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.suffix == ".ipynb" or "no_cluster" in fixtures:
            return 0
        if "broken_apps" in fixtures:
            return 3
        return 2 if {"shared_cluster", "tutorial_app"} & fixtures else 1

    items.sort(key=group)


def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb":  # the notebook starts its own cluster, on the tutorial's ports
        SHARED.stop()


def pytest_runtest_teardown(item):
    # The notebook stops its cluster in its last cells; when a cell fails those never run.
    if item.path.suffix == ".ipynb":
        subprocess.run([sys.executable, "local_cluster.py", "stop"], cwd=ROOT, capture_output=True, timeout=120)


def pytest_sessionfinish(session):
    SHARED.stop()
    # The notebook's cluster, if the session was interrupted in the middle of it (a no-op otherwise).
    subprocess.run([sys.executable, "local_cluster.py", "stop"], cwd=ROOT, capture_output=True, timeout=120)
    if not TOKEN_FILE.exists():  # the session stopped before it began
        return
    # The session's cluster token is in no file but its own: not in Ray's logs of any cluster the tests started,
    # not in this repository.
    shown = [path for path in files_containing(TOKEN_FILE.read_text(), SESSION_DIR, ROOT) if path != str(TOKEN_FILE)]
    if shown:
        print(f"\nThe tests' cluster token shows in: {shown}")
        session.exitstatus = 1
