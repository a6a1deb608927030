import ast
import glob
import json
import os
import re
import subprocess
import time
from urllib.parse import urlparse

import yaml
from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://localhost:8000/v1")
MODEL_ID = os.environ.get("MODEL_ID")  # else the one model the deployment lists, once it lists one
TIMEOUT_S = float(os.environ.get("READY_TIMEOUT_S", "900"))
# Ray's files live in <temp>/ray/session_latest, <temp> being $RAY_TMPDIR, else $TMPDIR, else /tmp.
LOGS = os.path.join(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp", "ray/session_latest/logs")


def serve_status():
    """`serve status` as text, and its applications as a dict."""
    text = subprocess.run(["serve", "status"], capture_output=True, text=True).stdout
    return text, (yaml.safe_load(text) or {}).get("applications") or {}


def applications_at(base_url):
    """The applications Serve serves at `base_url`'s route prefix ("/" for http://localhost:8000/v1), from the Ray
    dashboard, which `serve status` asks too but does not show the prefixes of. Until Serve has built an application
    from a config file, its prefix is only in that config."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient  # importing Ray takes seconds: only if needed

    prefix = urlparse(base_url).path.removesuffix("/").removesuffix("/v1") or "/"
    address = os.environ.get("RAY_DASHBOARD_ADDRESS", "http://localhost:8265")
    applications = ServeSubmissionClient(address).get_serve_details().get("applications") or {}
    return {
        name
        for name, app in applications.items()
        if prefix in (app.get("route_prefix"), (app.get("deployed_app_config") or {}).get("route_prefix"))
    }


def cluster_resources():
    """What the cluster's live nodes have, summed: {"CPU": 4.0, "GPU": 8.0, "accelerator_type:H200": 1.0, ...}."""
    from ray.util.state import list_nodes  # importing Ray takes seconds: only when a replica waits for resources

    has = {}
    for node in list_nodes(filters=[("state", "=", "ALIVE")], detail=True):
        for name, amount in node.resources_total.items():
            has[name] = has.get(name, 0) + amount
    return has


def infeasible_bundles(app):
    """The resource bundles of `app`'s replicas that no node of the cluster has room for, now or ever: Ray's
    placement group of each replica (named after it) says INFEASIBLE."""
    from ray.util.state import list_placement_groups

    return [
        bundle["unit_resources"]
        for group in list_placement_groups(filters=[("state", "=", "PENDING")], detail=True)
        if group.name.startswith(f"SERVE_REPLICA::{app}#") and group.stats["scheduling_state"] == "INFEASIBLE"
        for bundle in group.bundles
    ]


def logged_since(stamp, since):
    """Whether a log line's time ("2026-12-03 12:00:05") is at or after `since`: log times are whole seconds."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) >= since - 1


def autoscaler_refused(since):
    """The resource requests that Ray's autoscaler logged, after `since` (a time), that it cannot add a node for:
    on a cluster that adds nodes, only that makes an infeasible replica a lasting one."""
    requests = []
    for line in open(f"{LOGS}/monitor.log", errors="replace") if os.path.exists(f"{LOGS}/monitor.log") else []:
        found = re.match(r"([\d-]+ [\d:]+),\d+\s.*No available node types can fulfill resource request (\{.*?\})", line)
        if found and logged_since(found.group(1), since):
            requests.append(ast.literal_eval(found.group(2)))
    return requests


def replica_start_failed(app, since):
    """Whether Serve's controller logged, after `since` (a time), that a replica of `app` failed to start. `serve
    status` says so too, but only until a retry that is slow to start replaces the message. The controller's lines are
    in its log and its actor's stderr (a worker-*.err); in the latter alone once an engine's exception reached it."""
    for path in glob.glob(f"{LOGS}/serve/controller_*.log") + glob.glob(f"{LOGS}/worker-*.err"):
        for line in open(path, errors="replace"):
            found = re.match(r"\w+ ([\d-]+ [\d:]+),\d+ .*Exception in Replica\(.*app='([^']*)'", line)
            if found and found.group(2) == app and logged_since(found.group(1), since):
                return True
    return False


def log_errors(limit=15):
    """The error lines of this Ray session's Serve and worker logs, each once: where a failed start says why."""
    logs = glob.glob(f"{LOGS}/serve/*.log") + glob.glob(f"{LOGS}/*.err")
    found = {}
    for path in sorted(logs, key=os.path.getmtime):
        for line in open(path, errors="replace"):
            if "Error" in line or "error:" in line:
                found.setdefault(re.sub(r"[0-9a-f]{6,}|\d+", "#", line), line.strip()[:400])  # retries repeat
    text = "\n".join(list(found.values())[-limit:]) or f"(no error lines in {LOGS})"
    token = os.environ.get("HF_TOKEN")
    return text.replace(token, "<HF_TOKEN>") if token else text  # a failed start may print its config


def autoscaler_idle_with(request, since):
    """Whether Ray's autoscaler, in its latest report (logged after `since`), still has `request` (a replica's
    resources) pending and is adding no node for it: on a cluster that cannot grow, the request waits forever."""
    text = open(f"{LOGS}/monitor.log", errors="replace").read() if os.path.exists(f"{LOGS}/monitor.log") else ""
    reports = re.findall(r"Autoscaler status: ([\d-]+ [\d:]+)\.\d+ =+\n(.*?)\n\d{4}-", text, re.S)
    if not reports or not logged_since(reports[-1][0], since):
        return False
    report = reports[-1][1]
    pending = [ast.literal_eval(found) for found in re.findall(r"^ (\{.*?\}): \d+\+? pending", report, re.M)]
    return "(no pending nodes)" in report and request in pending


def waiting_replicas(applications, deploying):
    """The deployments of deploying applications whose replicas Serve says have waited over 30 s to be scheduled:
    [(application, deployment, the resources one replica asks for, what the cluster has free)]."""
    waiting = []
    for app in deploying:
        for name, deployment in applications[app].get("deployments", {}).items():
            found = re.search(
                r"taken more than \d+s to be scheduled.*Resources required for each replica: (\{.*?\}), "
                r"total resources available: (\{.*?\})",
                deployment.get("message") or "",
                re.S,
            )
            if found:
                waiting.append((app, name, json.loads(found.group(1)), found.group(2)))
    return waiting


def unschedulable(applications, deploying):
    """Why a replica of a deploying application ({name: deployed at}) can never be placed, if Ray's autoscaler
    refused what it asks for, or adds no node for a replica that waits for room; else None."""
    for app, name, request, free in waiting_replicas(applications, deploying):
        if autoscaler_idle_with(request, since=deploying[app]):
            return (
                f"{MODEL_ID or 'The model'} cannot be scheduled: a replica of deployment {name!r} of application "
                f"{app!r} needs {json.dumps(request)}, the cluster has {free} free, and Ray's autoscaler adds no node "
                "for it. Other replicas hold the rest. (On a machine whose CPUs the engine takes, give the OpenAI "
                "ingress no CPU of its own: ingress_deployment_config: {ray_actor_options: {num_cpus: 0}}.)"
            )
    for app, deployed_at in deploying.items():
        refused = autoscaler_refused(since=deployed_at)  # a file read: the `ray` commands below only if needed
        if not refused:
            continue
        has = cluster_resources()
        for bundle in infeasible_bundles(app):
            missing = [name for name, amount in bundle.items() if amount > 0 and name not in has]
            if not any(set(missing) <= set(request) for request in refused):
                continue  # the autoscaler may still add a node that fits
            needs = f"needs {', '.join(missing)}, which this cluster does not have" if missing else f"needs {bundle}"
            offered = ", ".join(
                f"{total / 2**30:.1f} GiB {name}" if name.endswith("memory") else f"{total:g} {name}"
                for name, total in sorted(has.items())  # CPU, GPU, accelerator_type:…, memory, …
                if not name.startswith("node:")
            )
            return (
                f"{MODEL_ID or 'The model'} cannot be scheduled: a replica of application {app!r} {needs}. No node of "
                f"this cluster can hold it, says Ray's autoscaler. The cluster has: {offered}."
            )
    return None


def main():
    global MODEL_ID
    # A one-token answer takes under a second once the model is up; a request that waits longer goes unanswered,
    # and the loop checks on the deployment instead.
    client = OpenAI(base_url=BASE_URL, api_key=os.environ.get("API_KEY", "FAKE_KEY"), max_retries=0, timeout=5)
    start = time.time()
    while True:
        asked = time.time()
        try:
            MODEL_ID = MODEL_ID or client.models.list().data[0].id
            client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
            answered = True
        except Exception as error:
            answered, waiting_for = False, f"{type(error).__name__}: {str(error)[:100]}"
        status_text, applications = serve_status()
        # Of several applications, judge the one that serves the model (Ray Serve LLM's LLMServer:<model id>), or,
        # before Serve lists its deployments, the one at BASE_URL's route: another's failure is not this one's.
        serving = {n: a for n, a in applications.items() if f"LLMServer:{MODEL_ID}" in a.get("deployments", {})}
        if not serving and len(applications) > 1:
            at_route = applications_at(BASE_URL)
            serving = {n: a for n, a in applications.items() if n in at_route}
        applications = serving or applications
        statuses = {name: app["status"] for name, app in applications.items()}
        deploying = {name: a["last_deployed_time_s"] for name, a in applications.items() if a["status"] == "DEPLOYING"}
        # Right after `serve deploy` over a running application, the old version may still answer.
        if answered and not deploying:
            print(f"{MODEL_ID} answered after {time.time() - start:.0f}s: ready.")
            return
        if answered:
            waiting_for = "an answer, from the old version: the new one is deploying"
        cause = unschedulable(applications, deploying)
        if cause:
            raise RuntimeError(f"{cause}\n{status_text}")
        failed = not statuses or any(s in ("DEPLOY_FAILED", "UNHEALTHY") for s in statuses.values())
        # A replica whose engine failed to start once will most likely fail again: Serve retries (3 times for one
        # replica, each a full cold start), but the cause is known now.
        retrying = "A replica failed to start" in json.dumps(applications) or any(
            replica_start_failed(app, since) for app, since in deploying.items()
        )
        if failed or retrying or time.time() - start > TIMEOUT_S:
            retry_note = "A replica failed to start; Serve is retrying. Run this again to wait for it.\n"
            again = retry_note if retrying and not failed else ""
            raise RuntimeError(
                f"{MODEL_ID or 'The model'} is not answering ({waiting_for}).\n{again}{status_text}\n{log_errors()}"
            )
        print(f"{time.time() - start:4.0f}s {statuses}, waiting ({waiting_for})", flush=True)
        time.sleep(max(0.0, asked + 10 - time.time()))  # a round every 10 s at most: `serve status` takes CPU


if __name__ == "__main__":
    main()
