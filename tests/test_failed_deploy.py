"""A deployment whose engine cannot start must fail the notebook fast, with the cause in the error it shows."""

import os
import subprocess
import sys
import time

from ci.local_cluster import ROOT, stop_ray


def test_engine_that_cannot_start_fails_the_notebook_fast_with_its_cause():
    # Ask vLLM for a KV cache far larger than this machine's memory: the engine refuses to start.
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "100000"}
    started = time.time()
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=600", "-p",
                              "no:cacheprovider", "-c", "/dev/null", "--rootdir", str(ROOT), "notebook.ipynb"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        stop_ray()
    elapsed = time.time() - started
    assert run.returncode == 1, run.stdout[-3000:]
    assert "tiny-reasoner is not answering" in run.stdout, run.stdout[-3000:]
    # The cause, from the replica's log, is in the failure the reader sees.
    assert "VLLM_CPU_KVCACHE_SPACE" in run.stdout, run.stdout[-5000:]
    assert elapsed < 480, f"took {elapsed:.0f}s to fail"
    print(f"failed after {elapsed:.0f}s")
