#!/usr/bin/env bash
# The tutorial's main path on this CPU, in one command: set up .venv, start a Ray cluster, deploy the small reasoning
# model, wait until it answers, ask the tutorial's questions (printing reasoning and answer), then stop everything.
set -euo pipefail
cd "$(dirname "$0")"

bash ci/setup.sh
source .venv/bin/activate
export TUTORIAL_DEVICE=cpu MODEL_ID=tiny-reasoner
# What the notebook's setup cell sets: token authentication, a cluster that listens on this machine only, and
# direct streaming behind HAProxy (read by Ray when it starts and by every `ray` and `serve` command).
export RAY_AUTH_MODE=token
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1
export RAY_SERVE_ENABLE_HA_PROXY=1
export RAY_SERVE_HAPROXY_MAXCONN=4096

python local_cluster.py start  # creates the cluster token if there is none; never prints it
trap 'serve shutdown -y || true; python local_cluster.py stop' EXIT  # also when a step below fails
serve start --http-host 127.0.0.1
serve run serve_tiny_reasoner:app --non-blocking
python wait_for_model.py
python client.py
python client_streaming.py
