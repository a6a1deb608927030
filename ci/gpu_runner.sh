#!/usr/bin/env bash
# On one GPU, what CI cannot do: the README's GPU quick start (`TUTORIAL_DEVICE=one-gpu bash quickstart.sh`), then
# the notebook end to end by nbmake in the same mode. Both use .venv, which ci/setup.sh fills from
# requirements-gpu.txt.
#
#   bash ci/gpu_runner.sh                      # pip installs requirements-gpu.txt, then nbmake and pytest
#   GPU_WHEELS=/tmp/w bash ci/gpu_runner.sh    # no network: .venv on this machine's Python, whose image has the CUDA
#                                              # libraries, plus the wheels of requirements-gpu.txt's closure (and
#                                              # nbmake, pytest) as they are
# Needs the tutorial's ports free, as the tests do (README). The log goes to ci/gpu_runner.log (committed).
set -euo pipefail
cd "$(dirname "$0")/.."
log=ci/gpu_runner.log  # committed: the last run on a lent GPU
export TUTORIAL_DEVICE=one-gpu
if [ -n "${GPU_WHEELS:-}" ] && [ ! -x .venv/bin/python ]; then
  python3 -m venv --system-site-packages .venv  # the image's CUDA libraries; the wheels add what it lacks
  .venv/bin/python -m pip install -q --no-index --no-deps --no-compile "$GPU_WHEELS"/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"

bash quickstart.sh 2>&1 | tee -a "$log"  # the README's GPU quick start, which runs ci/setup.sh first

.venv/bin/python -c "import nbmake, pytest" 2>/dev/null || .venv/bin/python -m pip install -q nbmake==1.5.5 pytest==9.2.0
start=$SECONDS
# Stopped early (a `timeout` around this script, Ctrl-C), pytest gets one SIGTERM and stops the notebook's Ray
# cluster: it runs in a session of its own, which such signals for this script's process group do not reach, and
# `tee` ignores them, so that pytest's last lines still have somewhere to go.
setsid .venv/bin/python -m pytest notebook.ipynb > >(trap '' TERM INT && exec tee -a "$log") 2>&1 &
pytest_pid=$!
trap 'kill -TERM "$pytest_pid" 2>/dev/null' TERM INT
status=0 && wait "$pytest_pid" || status=$?
if [ "$status" -gt 128 ] && kill -0 "$pytest_pid" 2>/dev/null; then
  status=0 && wait "$pytest_pid" || status=$?  # the trap ran: wait for pytest's teardown
fi
echo "gpu_runner: notebook on one GPU in $((SECONDS - start))s, exit status $status" | tee -a "$log"
exit "$status"
