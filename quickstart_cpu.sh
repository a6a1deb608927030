#!/usr/bin/env bash
# The tutorial's main path on this CPU, in one command: set up .venv, start Ray, deploy the small reasoning model,
# wait until it answers, ask the tutorial's questions (printing reasoning and answer), then shut everything down.
set -euo pipefail
cd "$(dirname "$0")"

bash ci/setup.sh
source .venv/bin/activate
export TUTORIAL_DEVICE=cpu MODEL_ID=tiny-reasoner RAY_AUTH_MODE=token
# The notebook's CPU mode: stream straight from the vLLM server, behind HAProxy (read by `ray start` and `serve run`).
export RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1 RAY_SERVE_ENABLE_HA_PROXY=1

ray start --head --disable-usage-stats
trap 'serve shutdown -y || true; ray stop' EXIT  # also when a step below fails
serve run serve_tiny_reasoner:app --non-blocking
python wait_for_model.py
python client.py
python client_streaming.py
