"""Deployments that cannot work must fail the reader's wait (wait_for_model.py) fast, with the cause in its error:
an engine that cannot start, a replica that no node can hold, a wrong key in a Serve config file.

"Fast" is measured from the moment Ray logged the failure: how long it takes vLLM to fail or Ray to find no node is
theirs, and varies with the machine's load; noticing it is the script's, in the next round of its loop.

The three broken applications are deployed at once beside the tutorial's, each under a route of its own, on the
tests' shared cluster; the next test that needs the tutorial's application alone removes them again."""

import copy
import glob
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from harness.config import CPU_CONFIG, ROOT, app_llm_config, load
from harness.logs import controller_logs, first_time
from harness.servers import TUTORIAL_RAY_ENV
from tests.plugin import session_ray_logs


def broken_app(name, change):
    """The tutorial's application under another name, route and model id, changed by `change(llm_config)`."""
    app = copy.deepcopy(load(CPU_CONFIG)["applications"][0])
    app["name"], app["route_prefix"] = name, f"/{name}"
    llm = app_llm_config(app)
    llm["model_loading_config"]["model_id"] = name
    change(llm)
    return app


def wait_for(name, timeout_s=600):
    """Run wait_for_model.py against the broken application; return its result and the times it began and ended."""
    env = {
        **os.environ,
        **TUTORIAL_RAY_ENV,
        "BASE_URL": f"http://127.0.0.1:8000/{name}/v1",
        "MODEL_ID": name,
        "READY_TIMEOUT_S": "500",
    }
    began = time.time()
    wait = subprocess.run(
        [sys.executable, "wait_for_model.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    return wait, began, time.time()


def rounds_printed(wait, began):
    """When each round of the wait that went on printed its line ("  15s {...}, waiting (...)"), or a little earlier:
    the line counts whole seconds from the script's start, which comes after `began`."""
    return [began + int(seconds) for seconds in re.findall(r"^ *(\d+)s \{", wait.stdout, re.M)]


def session_logs(logs):
    """This test session's Ray log files that match `logs`, a glob under its logs folder."""
    return glob.glob(str(session_ray_logs() / logs))


def first_logged(pattern, logs, since):
    """When this test session's Ray cluster first logged a line that matches `pattern` in the files `logs` (a glob
    under its logs folder, or "controller": Serve's controller's), at or after the time `since`."""
    files = controller_logs(session_ray_logs()) if logs == "controller" else session_logs(logs)
    logged = first_time(files, pattern, since=since - 1)  # a second's slack: Ray's log times are local, to the ms
    assert logged is not None, f"Ray logged no line like {pattern!r} in {logs}"
    return logged


def huge_kv_cache(llm_config):
    """A KV cache far larger than this machine's memory: the engine refuses to start."""
    llm_config["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] = "100000"


def needs_an_a100(llm_config):
    """As an accelerator_type that the node does not have does on a GPU node: here a CPU bundle that asks for one."""
    llm_config["placement_group_config"] = {"bundles": [{"CPU": 1, "accelerator_type:A100-40G": 0.001}]}


def misspelled(llm_config):
    llm_config["engine_kwarg"] = llm_config.pop("engine_kwargs")


@pytest.fixture(scope="module")
def broken_apps(shared_cluster):
    """The three broken applications, deployed at once beside the tutorial's (one `serve deploy`, so that their
    failures overlap instead of following each other); the time of the deploy."""
    apps = [broken_app("no-engine", huge_kv_cache), broken_app("no-a100", needs_an_a100)]
    apps.append(broken_app("misspelled", misspelled))
    config = shared_cluster.tutorial_config()  # as the shared cluster deploys it: unchanged, it keeps running
    config["applications"] += apps
    path = ROOT / "bench_results" / "broken_apps.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    shared_cluster.deploy()  # the cluster, with the tutorial's application
    shared_cluster.deployed = None  # from here on the cluster holds something else
    deployed = time.time()
    shared_cluster.cluster.run("serve", "deploy", str(path))
    return deployed


def test_an_engine_that_cannot_start_fails_the_wait_fast_with_its_cause(broken_apps):
    deployed = broken_apps
    wait, began, ended = wait_for("no-engine")
    print(f"failed {ended - deployed:.0f}s after the deploy:\n{wait.stderr[-1500:]}")
    assert wait.returncode == 1, wait.stdout[-2000:]
    assert "no-engine is not answering" in wait.stderr and "A replica failed to start" in wait.stderr, wait.stderr[
        -3000:
    ]
    assert "VLLM_CPU_KVCACHE_SPACE" in wait.stderr, wait.stderr[-5000:]  # the cause, from the replica's log
    failure = r"Exception in Replica\(.*app='no-engine'"
    failed = first_logged(failure, "controller", since=deployed)
    print(f"Serve's controller logged the failed start {failed - deployed:.0f}s after the deploy")
    # Fast: at the first failed start, not after Serve's retries (each a full cold start). A round of the wait is a
    # request (5 s at most) and `serve status`, which is slow while Serve starts the retry on the same 2 cores.
    if began < failed:  # (run first, as in the file's order; shuffled, the wait may begin after the failure)
        retry_failed = first_time(controller_logs(session_ray_logs()), failure, since=failed + 1)
        assert retry_failed is None or ended < retry_failed, "the wait went on after Serve's first retry failed too"
    noticed = ended - max(failed, began)
    assert noticed < 60, f"the wait ended {noticed:.0f}s after Serve logged the failure (or after it began)"


def test_a_replica_no_node_can_hold_fails_the_wait_fast_naming_what_it_needs(broken_apps):
    deployed = broken_apps
    wait, began, ended = wait_for("no-a100")
    print(f"failed {ended - deployed:.0f}s after the deploy, after these rounds:\n{wait.stdout[-1500:]}")
    print(wait.stderr[-1500:])
    assert wait.returncode == 1, wait.stdout[-2000:]
    message = wait.stderr.strip().splitlines()
    assert any(
        "no-a100 cannot be scheduled: a replica of application 'no-a100' needs accelerator_type:A100-40G" in line
        for line in message
    )
    assert any("The cluster has: 4 CPU, " in line for line in message), wait.stderr[-2000:]  # and what it has
    refused = first_logged(r"No available node types can fulfill .*A100-40G", "monitor.log", since=deployed)
    print(f"Ray's autoscaler logged that no node can hold it {refused - deployed:.0f}s after the deploy")
    # Fast: in the first round after that. A round reads the log just before it prints its line, so a line printed
    # over 3 s after the refusal comes from a round that read it and went on. (A bound in seconds would measure the
    # machine: on 2 busy cores one round's `serve status` took 15 s, and a CI run ended 40 s after the refusal.)
    went_on = [f"{printed - refused:.0f}s" for printed in rounds_printed(wait, began) if printed > refused + 3]
    assert not went_on, f"rounds went on {', '.join(went_on)} after the autoscaler said no node fits:\n{wait.stdout}"
    print(f"the wait ended {ended - refused:.0f}s after it")


def test_a_wrong_key_in_a_config_file_fails_the_wait_with_its_name(broken_apps):
    wait, _, _ = wait_for("misspelled")
    assert wait.returncode == 1, wait.stdout[-2000:]
    assert "DEPLOY_FAILED" in wait.stderr, wait.stderr[-3000:]
    assert "engine_kwarg" in wait.stderr and "Extra inputs are not permitted" in wait.stderr, wait.stderr[-3000:]
