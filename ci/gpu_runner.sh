#!/usr/bin/env bash
# The notebook end to end on one GPU (TUTORIAL_DEVICE=one-gpu: the small model), run by nbmake: what CI cannot do.
#
#   bash ci/gpu_runner.sh                                 # installs requirements-gpu.txt (and nbmake, pytest) into .venv-gpu
#   GPU_PYTHON=python3 GPU_WHEELS=/tmp/w bash ci/gpu_runner.sh   # offline: that Python (with its CUDA torch), and
#                                                         # the wheels of everything else, installed as they are
# Needs the tutorial's ports free, as the tests do (README). The log goes to ci/gpu_runner.log (committed).
set -euo pipefail
cd "$(dirname "$0")/.."
log=ci/gpu_runner.log  # committed: the last run on a lent GPU
python="${GPU_PYTHON:-}"
if [ -z "$python" ]; then
  python3 -m venv .venv-gpu && python=.venv-gpu/bin/python
fi
if [ -n "${GPU_WHEELS:-}" ]; then
  # No network: the wheels, without a resolver, in a folder of their own ahead of the image's packages.
  site="$PWD/.gpu-site"
  [ -d "$site/ray" ] ||  # installed by an earlier run on this machine
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$GPU_WHEELS"/*.whl
  export PYTHONPATH="$site" PATH="$site/bin:$PATH"
else
  "$python" -m pip install -q -r requirements-gpu.txt nbmake==1.5.5 pytest==9.2.0
fi
export PATH="$(dirname "$("$python" -c 'import sys; print(sys.executable)')"):$PATH"  # ray, serve, jupyter
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
versions='import ray, vllm, torch; print("ray", ray.__version__, "vllm", vllm.__version__, "torch", torch.__version__)'
"$python" -c "$versions" |
  tee -a "$log"
# The versions installed are the ones requirements-gpu.txt pins, also when the wheels came from GPU_WHEELS.
"$python" - <<'PY' | tee -a "$log"
import re
from importlib.metadata import version
pins = re.findall(r"^([\w-]+)(?:\[[\w,]+\])?==([\w.+-]+)", open("requirements-gpu.txt").read(), re.M)
wrong = [f"{name} {version(name)} (pinned {pin})" for name, pin in pins if version(name) != pin]
assert not wrong, f"not the versions of requirements-gpu.txt: {wrong}"
print(f"requirements-gpu.txt: all {len(pins)} pins installed as pinned")
PY
start=$SECONDS
# Stopped early (a `timeout` around this script, Ctrl-C), pytest gets one SIGTERM and stops the notebook's Ray
# cluster: it runs in a session of its own, which such signals for this script's process group do not reach, and
# `tee` ignores them, so that pytest's last lines still have somewhere to go.
setsid "$python" -m pytest notebook.ipynb --tutorial-device one-gpu > >(trap '' TERM INT && exec tee -a "$log") 2>&1 &
pytest_pid=$!
trap 'kill -TERM "$pytest_pid" 2>/dev/null' TERM INT
status=0 && wait "$pytest_pid" || status=$?
if [ "$status" -gt 128 ] && kill -0 "$pytest_pid" 2>/dev/null; then
  status=0 && wait "$pytest_pid" || status=$?  # the trap ran: wait for pytest's teardown
fi
echo "gpu_runner: notebook on one GPU in $((SECONDS - start))s, exit status $status" | tee -a "$log"
exit "$status"
