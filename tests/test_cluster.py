"""The cluster itself: what it listens on. (Its token on a fresh machine, and that stopping it stops it alone:
tests/test_api_key.py, with the README's key sequence on such a machine.)"""

import time

import pytest

from ci import listeners
from harness.config import ROOT


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
