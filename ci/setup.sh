#!/usr/bin/env bash
# Create .venv with the pinned CPU environment (requirements-cpu.txt). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
source .venv/bin/activate
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
python -c "import vllm, ray; print(f'.venv ready: ray {ray.__version__}, vllm {vllm.__version__} (CPU)')"
