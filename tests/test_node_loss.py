"""Two Ray nodes, one dies under load: no request is lost beyond those on the dead node, and the deployment recovers.

Runs benchmark/node_loss.py as a reader would (a head, a worker node and a spare, every address on loopback), with a
shorter load before and after, and holds its results to that."""

import json
import subprocess
import sys

from harness.config import ROOT


def test_a_dead_node_loses_only_its_own_requests_and_the_deployment_recovers(no_cluster, tmp_path):
    out = tmp_path / "node_loss.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.node_loss",
            "--out",
            str(out),
            "--warm-s",
            "10",
            "--outage-s",
            "10",
            "--after-s",
            "10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    moments = results["seconds_after_the_kill"]
    # The deployment recovers: a replacement replica, on the spare node, answers its share of the load.
    assert moments["node marked dead"] < moments["replacement replica answered"]
    assert results["completed_by_the_replacement"] > 0
    # The surviving replica kept serving meanwhile, and no chain it served was cut.
    assert results["completed_by_the_survivor_alone"] > 0
    assert results["failed_that_the_survivor_served"] == 0
    # Only the dead node's requests fail: those it held at the kill, and those routed to it in the moments before
    # Serve noticed; none ends after Ray declared the node dead.
    late = [request for request in results["failed_requests"] if request["ended"] > moments["node marked dead"]]
    assert not late, late
