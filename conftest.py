"""Shared test setup (for the notebook and tests/): the tutorial runs in CPU mode, and nothing a test starts outlives it."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

os.environ["TUTORIAL_DEVICE"] = "cpu"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(ROOT))

# Importing it also puts this environment's bin/ first on PATH: the notebook's %%bash cells and the tests call
# `ray`, `serve` and `python`, and take them from here.
from ci.local_cluster import stop_ray  # noqa: E402


def pytest_runtest_teardown(item):
    # The notebook stops Ray in its last cells; when a cell fails those never run, so stop Ray here too.
    if item.path.suffix == ".ipynb":
        stop_ray()
