#!/usr/bin/env bash
# On one GPU, what CI cannot do: the README's GPU quick start (`TUTORIAL_DEVICE=one-gpu bash quickstart.sh`, timed by
# ci/time_quickstart.sh), then the notebook end to end by nbmake in the same mode. Both use .venv, which ci/setup.sh
# fills from requirements-gpu.txt.
#
#   bash ci/gpu_runner.sh [quickstart] [notebook]   # both by default; pip installs requirements-gpu.txt
#   GPU_WHEELS=/tmp/w bash ci/gpu_runner.sh         # no network: .venv from the wheels of requirements-gpu.txt's whole
#                                                   # closure (CUDA libraries, torch, nbmake, pytest), as they are
# Needs the tutorial's ports free, as the tests do (README). Logs: ci/quickstart_one-gpu.log and ci/gpu_runner.log
# (committed: the last runs on a lent GPU); LOG_DIR puts them elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("$@") && [ ${#steps[@]} -gt 0 ] || steps=(quickstart notebook)
log="${LOG_DIR:-ci}/gpu_runner.log"
export TUTORIAL_DEVICE=one-gpu
if [ -n "${GPU_WHEELS:-}" ] && [ ! -x .venv/bin/python ]; then
  # Not --system-site-packages: the lent machines' python3 is itself a venv that shows none of its packages.
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --no-index --no-deps --no-compile "$GPU_WHEELS"/*.whl
fi
if [[ " ${steps[*]} " == *" quickstart "* ]]; then
  bash ci/time_quickstart.sh  # the README's GPU quick start, which runs ci/setup.sh first
fi
[[ " ${steps[*]} " == *" notebook "* ]] || exit 0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"

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
