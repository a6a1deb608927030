# wait_for_model.py
import glob
import os
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


def recent_logs(lines=20):
    """The last lines of Serve's controller and replica logs in the current Ray session."""
    paths = sorted(glob.glob("/tmp/ray/session_latest/logs/serve/*.log"), key=os.path.getmtime)[-4:]
    return "\n".join(f"--- {path}\n" + "".join(open(path, errors="replace").readlines()[-lines:]) for path in paths)


client = OpenAI(base_url=BASE_URL, api_key="FAKE_KEY", max_retries=0, timeout=30)
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
        raise RuntimeError(f"{MODEL_ID} is not answering ({waiting_for}).\n{status_text}\n{recent_logs()}")
    print(f"{time.time() - start:4.0f}s {statuses}, waiting ({waiting_for})", flush=True)
    time.sleep(5)
