"""The cluster itself: its token on a fresh machine, what it listens on, and that stopping it stops it alone."""

import os
import re
import stat
import subprocess
import sys
import time

import pytest

from ci import listeners
from harness.config import ROOT
from harness.servers import TUTORIAL_RAY_ENV, ray_temp_dir
from tests.plugin import files_containing


def test_a_fresh_machine_gets_a_private_token_that_is_never_shown_and_a_stop_that_touches_nothing_else(
    no_cluster, tmp_path
):
    """The reader's path on a machine with no ~/.ray: `local_cluster.py start` creates the token (mode 600) and
    the cluster uses it; no output or log shows it; `stop` ends the cluster and leaves another user's Ray and vLLM
    processes alone, even when their names are the same."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = ray_temp_dir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env.update(HOME=str(home), RAY_TMPDIR=str(ray_tmp), **TUTORIAL_RAY_ENV)
    # Someone else's processes, named as Ray's and vLLM's are: `ray stop` or a kill by name would end them.
    decoys = [
        subprocess.Popen(["bash", "-c", f"exec -a '{name}' sleep 600"], start_new_session=True)
        for name in ("raylet", "ray::ServeReplica:default:LLMServer", "VLLM::EngineCore", "gcs_server")
    ]
    outputs = []
    try:

        def run(*command):
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, done.stdout + done.stderr
            return done

        run(sys.executable, "local_cluster.py", "start")
        token_file = home / ".ray" / "auth_token"
        token = token_file.read_text()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # Ray alone would make it 0o644
        # `ray status` reads the autoscaler's report, which comes seconds after `ray start` returns (CI once asked
        # too soon: "No cluster status"); the token is accepted as soon as the command exits 0.
        deadline = time.time() + 60
        while "Active:" not in run("ray", "status").stdout and time.time() < deadline:
            time.sleep(2)
        assert "Active:" in outputs[-1], outputs[-1]
        run("serve", "status")
        # With another token, the cluster refuses the same command.
        refused = subprocess.run(
            ["ray", "status"],
            cwd=ROOT,
            env={**env, "RAY_AUTH_TOKEN": "0" * 64},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0, refused.stdout
        outputs.append(refused.stdout + refused.stderr)
        run(sys.executable, "local_cluster.py", "stop")
        assert "none left" in outputs[-1]
        assert all(decoy.poll() is None for decoy in decoys), "stop ended a process it did not start"
    finally:
        subprocess.run([sys.executable, "local_cluster.py", "stop"], cwd=ROOT, env=env, capture_output=True)
        for decoy in decoys:
            decoy.kill()
    # The token is in no output, in no file of Ray's logs or of this repository, and nowhere in HOME but its file.
    assert not [text for text in outputs if token in text]
    found = files_containing(token, ray_tmp, home, ROOT)
    assert found == [str(token_file)], found


def notebook_listener_table():
    """The rows of the notebook's table of what listens beyond loopback: {(role, port or "any"): row}."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("| listens on | port |") :]
    rows = {}
    for line in section.splitlines()[2:]:
        line = line.strip()  # the table sits in a list item
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[(cells[0].strip("`"), cells[1].strip("`"))] = cells
    return rows


def test_only_the_listeners_the_notebook_explains_are_reachable_beyond_loopback(tutorial_app):
    """From the socket table of the cluster's own processes. Each listener beyond loopback is probed over loopback
    (no traffic leaves the machine) without the token, and must answer as the notebook's table says."""
    import local_cluster

    # HAProxy restarts when the routes change: read the socket table a few times and take every listener seen.
    found = set()
    for _ in range(3):
        found |= set(listeners.listeners(local_cluster.started_session()))
        time.sleep(2)
    table = notebook_listener_table()
    seen = {}
    for role, address, port, pid in listeners.exposed(found):
        key = (role, str(port)) if (role, str(port)) in table else (role, "random")
        assert key in table, f"{role} listens on {address}:{port}, and the notebook's table does not explain it"
        answer = listeners.probe(port, role)
        # A replica of an application another test removed refuses calls while it shuts down (up to 35 s), then
        # goes away: wait for either.
        deadline = time.time() + 90
        while answer.startswith("gRPC UNAVAILABLE") and listeners.still_listening(pid, port) and time.time() < deadline:
            time.sleep(3)
            answer = listeners.probe(port, role)
        if not listeners.still_listening(pid, port):
            continue  # gone since the table was read: nothing to judge
        seen[key] = answer
        expected = table[key][3]
        assert seen[key].split(":")[0] in expected, (key, seen[key], expected)
    print(f"\n{len(found)} listening sockets, beyond loopback: {seen}")
    assert set(seen) == set(table), f"the notebook lists listeners that are not there: {set(table) - set(seen)}"


@pytest.mark.parametrize("port", [8000, 8265, 6379, 10001, 52365])
def test_the_endpoint_and_the_control_plane_listen_on_loopback_only(tutorial_app, port):
    import local_cluster

    bound = {address for _, address, p, _ in listeners.listeners(local_cluster.started_session()) if p == port}
    assert bound and all(address.startswith(listeners.LOOPBACK) for address in bound), (port, bound)
