"""Start a Ray cluster on this machine for the tutorial, and stop exactly that cluster again.

    python local_cluster.py start   # Ray's cluster token (created once), then `ray start --head [options]`
    python local_cluster.py stop    # end the processes of the cluster that `start` started, and nothing else

Why not plain `ray stop`: it ends every Ray process of yours on this machine, other clusters included. So `start`
runs `ray start` in a process session of its own and notes the session next to the cluster's files, and `stop`
ends the processes of that session: Ray's own, the Serve replicas and the vLLM engines they started.
If a Ray cluster is already running, `start` uses it and `stop` leaves it running.
"""

import os
import secrets
import subprocess
import sys

import psutil


def ray_dir():
    """Where Ray keeps its files: <temp>/ray, <temp> being $RAY_TMPDIR, else $TMPDIR, else /tmp."""
    return os.path.join(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp", "ray")


def session_file():
    return os.path.join(ray_dir(), "session_latest", "local_cluster.sid")  # beside the newest cluster's files


def session_processes(session_id):
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id:
                found.append(process)
        except (ProcessLookupError, PermissionError):
            pass  # ended meanwhile, or not ours
    return found


def started_session():
    """The session id of the cluster that `start` started, if it is still running."""
    try:
        with open(session_file()) as f:
            session_id = int(f.read())
    except FileNotFoundError:
        return None
    return session_id if session_processes(session_id) else None


def ensure_token():
    """Ray's cluster token, where Ray looks for one ($RAY_AUTH_TOKEN, the file at $RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token); if there is none, a new one as `ray get-auth-token --generate` makes it (64 random hex
    digits), but in a file readable by you alone: Ray's own is readable by every user of the machine. Never printed."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))


def some_cluster_may_run():
    """What `ray status` would find: $RAY_ADDRESS, the address file of the last `ray start`, or a running GCS.
    Checked first because `ray status` takes seconds to say there is no cluster."""
    if os.environ.get("RAY_ADDRESS") or os.path.exists(os.path.join(ray_dir(), "ray_current_cluster")):
        return True
    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


def start(ray_start_args=()):
    ensure_token()
    if started_session():
        print("The cluster that `local_cluster.py start` started is running.")
        return
    if some_cluster_may_run() and subprocess.run(["ray", "status"], capture_output=True).returncode == 0:
        print("A Ray cluster is already running: using it; `local_cluster.py stop` will leave it running.")
        return
    # A new session: Ray's daemons, and everything they start, inherit it; `stop` ends that session.
    head = subprocess.Popen(
        ["ray", "start", "--head", "--disable-usage-stats", *ray_start_args], start_new_session=True
    )
    if head.wait() != 0:
        stop()  # whatever part of the cluster did start
        sys.exit(f"ray start failed (exit status {head.returncode})")
    with open(session_file(), "w") as f:
        f.write(str(head.pid))  # `ray start` led the session, so its PID is the session's id


def stop(grace_s=10):
    session_id = started_session()
    if session_id is None:
        print("No cluster started by `local_cluster.py start` is running: nothing to stop.")
        return
    # In `ray stop`'s order: the raylet first (it ends its workers, and their vLLM engines, cleanly), then the rest,
    # the GCS last. SIGTERM, then SIGKILL for whatever is still running after grace_s.
    processes = session_processes(session_id)
    names = {}
    for process in processes:
        try:
            names[process] = process.name()
        except psutil.NoSuchProcess:
            names[process] = ""
    raylets = [p for p in processes if names[p] == "raylet"]
    gcs = [p for p in processes if names[p] == "gcs_server"]
    for group in (raylets, [p for p in processes if p not in raylets + gcs], gcs):
        for process in group:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(group, timeout=grace_s)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)
    left = session_processes(session_id)
    if left:
        sys.exit(f"still running after SIGKILL: {[p.pid for p in left]}")
    os.remove(session_file())
    # The address file that lets `ray status` and `serve` find the cluster; `ray stop` removes it too.
    address_file = os.path.join(ray_dir(), "ray_current_cluster")
    if os.path.exists(address_file):
        os.remove(address_file)
    print(f"Stopped the cluster: {len(processes)} processes, none left.")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("start", "stop"):
        sys.exit("usage: python local_cluster.py start [ray start options] | stop")
    start(sys.argv[2:]) if command == "start" else stop()
