# wait_for_model.py
import glob
import os
import subprocess
import time

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://localhost:8000/v1")
MODEL_ID = os.environ.get("MODEL_ID", "my-qwq-32B")
TIMEOUT_S = float(os.environ.get("READY_TIMEOUT_S", "900"))


def serve_status():
    return subprocess.run(["serve", "status"], capture_output=True, text=True).stdout


def recent_logs(lines=25):
    """The last lines of Serve's controller and replica logs in the current Ray session."""
    paths = sorted(glob.glob("/tmp/ray/session_latest/logs/serve/*.log"), key=os.path.getmtime)[-3:]
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
    status = serve_status()
    if "DEPLOY_FAILED" in status or "UNHEALTHY" in status or time.time() - start > TIMEOUT_S:
        raise RuntimeError(f"{MODEL_ID} is not answering.\n{status}\n{recent_logs()}")
    print(f"{time.time() - start:4.0f}s waiting ({waiting_for})", flush=True)
    time.sleep(5)
