# wait_for_model.py
import glob
import os
import re
import subprocess
import time

import yaml
from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://localhost:8000/v1")
MODEL_ID = os.environ.get("MODEL_ID", "my-qwq-32B")
TIMEOUT_S = float(os.environ.get("READY_TIMEOUT_S", "900"))


def serve_status():
    """`serve status` as text, and {application: status} parsed from it."""
    text = subprocess.run(["serve", "status"], capture_output=True, text=True).stdout
    applications = (yaml.safe_load(text) or {}).get("applications") or {}
    return text, {name: app["status"] for name, app in applications.items()}


def log_errors(limit=15):
    """The error lines of this Ray session's Serve and worker logs, each once: where a failed start says why."""
    logs = glob.glob("/tmp/ray/session_latest/logs/serve/*.log") + glob.glob("/tmp/ray/session_latest/logs/*.err")
    found = {}
    for path in sorted(logs, key=os.path.getmtime):
        for line in open(path, errors="replace"):
            if "Error" in line or "error:" in line:
                found.setdefault(re.sub(r"[0-9a-f]{6,}|\d+", "#", line), line.strip()[:400])  # retries repeat
    text = "\n".join(list(found.values())[-limit:]) or "(no error lines in /tmp/ray/session_latest/logs)"
    token = os.environ.get("HF_TOKEN")
    return text.replace(token, "<HF_TOKEN>") if token else text  # a failed start may print its config


client = OpenAI(base_url=BASE_URL, api_key=os.environ.get("API_KEY", "FAKE_KEY"), max_retries=0, timeout=30)
start = time.time()
while True:
    try:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        print(f"{MODEL_ID} answered after {time.time() - start:.0f}s: ready.")
        break
    except Exception as error:
        waiting_for = f"{type(error).__name__}: {str(error)[:100]}"
    status_text, statuses = serve_status()
    failed = not statuses or any(s in ("DEPLOY_FAILED", "UNHEALTHY") for s in statuses.values())
    if failed or time.time() - start > TIMEOUT_S:
        raise RuntimeError(f"{MODEL_ID} is not answering ({waiting_for}).\n{status_text}\n{log_errors()}")
    print(f"{time.time() - start:4.0f}s {statuses}, waiting ({waiting_for})", flush=True)
    time.sleep(5)
