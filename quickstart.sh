#!/usr/bin/env bash
# The tutorial's main path in one command: README.md's shell blocks from "Deploy locally" to "Shut down", in
# order, as a reader pastes them. Generated from notebook.ipynb by ci/generate.py; do not edit.
#
#   bash quickstart.sh                           # the small model on this CPU
#   TUTORIAL_DEVICE=one-gpu bash quickstart.sh   # the small model on one GPU (gpu: QwQ-32B on 8 GPUs)
set -euo pipefail
cd "$(dirname "$0")"
trap 'status=$?; set +e; serve shutdown -y &>/dev/null; python local_cluster.py stop &>/dev/null; exit $status' EXIT

bash ci/setup.sh
source .venv/bin/activate

source tutorial_env.sh

python local_cluster.py start
serve start --http-host 127.0.0.1

serve run "$SERVE_APP" --non-blocking

python wait_for_model.py

serve status

set -o pipefail
curl --silent --show-error --fail-with-body http://localhost:8000/v1/chat/completions \
  -H "Authorization: Bearer ${API_KEY:-FAKE_KEY}" \
  -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL_ID"'", "messages": [{"role": "user", "content": "How many R'\''s are in the word strawberry?"}]}' \
  | python -m json.tool

python client.py

python client_streaming.py

curl --silent --show-error --fail-with-body http://localhost:8000/v1/chat/completions \
  -H "Authorization: Bearer ${API_KEY:-FAKE_KEY}" -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL_ID"'", "messages": [{"role": "user", "content": "How many R'\''s are in the word strawberry?"}],
       "chat_template_kwargs": {"enable_thinking": false}}' \
  | python -c 'import json, sys; m = json.load(sys.stdin)["choices"][0]["message"]; print({k: m[k] for k in ("reasoning", "content")})'

curl --silent --show-error --fail-with-body http://localhost:8000/v1/chat/completions \
  -H "Authorization: Bearer ${API_KEY:-FAKE_KEY}" -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL_ID"'", "messages": [{"role": "user", "content": "How many R'\''s are in the word strawberry?"}],
       "thinking_token_budget": 64}' \
  | python -c 'import json, sys; m = json.load(sys.stdin)["choices"][0]["message"]; print({k: m[k] for k in ("reasoning", "content")})'

curl --silent --show-error --fail-with-body http://localhost:8000/v1/chat/completions \
  -H "Authorization: Bearer ${API_KEY:-FAKE_KEY}" -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL_ID"'", "messages": [{"role": "user", "content": "How many R'\''s are in the word strawberry?"}],
       "max_tokens": 20}' \
  | python -c 'import json, sys; c = json.load(sys.stdin)["choices"][0]; print(c["finish_reason"], {k: c["message"][k] for k in ("reasoning", "content")})'

serve deploy "$SERVE_CONFIG"

python wait_for_model.py

python client.py

serve shutdown -y
python local_cluster.py stop
