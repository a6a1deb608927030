#!/usr/bin/env bash
# Create .venv with the pinned requirements of the tutorial's mode (TUTORIAL_DEVICE, as in tutorial_env.sh):
# requirements-cpu.txt for cpu (the default), requirements-gpu.txt for one-gpu and gpu. Safe to run again: it only
# adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${TUTORIAL_DEVICE:-cpu}"

[ -x .venv/bin/python ] || python3 -m venv .venv
source .venv/bin/activate

# Jupyter's jsonschema extra brings rfc3987-syntax, which builds a grammar parser when it is imported, and every
# process that imports Ray imports jsonschema: 1.6 s of CPU in each of a cluster's Python processes (19 with the
# tutorial's app deployed; a local cluster started and that app deployed answer after 90 s with it and 64 s without,
# on 2 cores, two runs each on 2026-12-07). Nothing here checks IRIs with it; jsonschema skips that one format without it.
drop_slow_import() { pip uninstall --quiet --yes rfc3987-syntax 2>/dev/null || true; }

if [ "$device" != cpu ]; then
  # Installed as pinned already (a second run, or a machine without network that was given the wheels): done.
  if ! python - <<'PY'; then
import re
import sys
from importlib.metadata import PackageNotFoundError, version

pins = re.findall(r"^([\w-]+)(?:\[[\w,]+\])?==([\w.+-]+)", open("requirements-gpu.txt").read(), re.M)
try:
    missing = [f"{name}=={pin}" for name, pin in pins if version(name) != pin]
except PackageNotFoundError as error:
    missing = [str(error)]
sys.exit(1 if missing else 0)
PY
    python -m pip install --quiet --disable-pip-version-check -r requirements-gpu.txt
  fi
  drop_slow_import
  python -c "import vllm, ray, torch; print(f'.venv ready: ray {ray.__version__}, vllm {vllm.__version__}, torch {torch.__version__}')"
  exit 0
fi

python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
# torch's CPU build is not on PyPI. Take it from pip's configured sources if they have it (a local wheel, as on our
# CI machines), else from PyTorch's CPU index. Installing it first keeps that index out of the main install, where
# pip would otherwise ask it for every other package too.
torch_pin=$(grep -E '^torch==' requirements-cpu.txt)
if ! python -c "import torch, sys; sys.exit(torch.__version__ != '${torch_pin#torch==}')" 2>/dev/null; then
  pip install --quiet "$torch_pin" 2>/dev/null \
    || pip install --quiet "$torch_pin" --index-url https://download.pytorch.org/whl/cpu
fi
pip install --quiet -r requirements-cpu.txt
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds; beside the CPU torch they break `import vllm`.
pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
drop_slow_import
python -c "import vllm, ray; print(f'.venv ready: ray {ray.__version__}, vllm {vllm.__version__} (CPU)')"
