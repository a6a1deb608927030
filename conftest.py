"""Shared test setup (for the notebook and tests/): the tutorial runs in CPU mode, and nothing a test starts outlives it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV_BIN = str(Path(sys.executable).parent)

# The notebook's %%bash cells and the tests call `ray`, `serve` and `python`: take them from this environment.
os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
os.environ["TUTORIAL_DEVICE"] = "cpu"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(ROOT))


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


def pytest_runtest_teardown(item):
    # The notebook stops Ray in its last cells; when a cell fails those never run, so stop Ray here too.
    if item.path.suffix == ".ipynb":
        stop_ray()
