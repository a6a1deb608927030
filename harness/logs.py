"""Ray's, Serve's and vLLM's own log lines, read: when something happened (a line's time), which replica answered
which request, what Serve's controller decided, and the milestones of a cold start. Experiments and tests read logs
only through this module.

    ServeLogs(ray_tmp).started_replicas()     # [(replica id, when it started)] of the model's deployment
"""

import re
from datetime import datetime
from pathlib import Path

from harness.config import MODEL_ID, ray_logs

# The moments a cold start passes, in order, each the end of a phase: (phase, log file, regex of the line).
# vLLM's lines carry the time to the second; Ray's to the millisecond.
MILESTONES = [
    ("ray start (local_cluster.py start)", None, None),
    ("serve start: Serve's controller, HAProxy", None, None),
    ("serve run: import and build the app", "controller", r"Deploying new (app|version)"),
    ("Serve: start the replica's actor", "replica", r"Started initializing replica"),
    ("Ray Serve LLM: model-files task", "replica", r"Using executor class"),
    ("vLLM: start the engine process", "vllm", r"Initializing a V1 LLM engine"),
    ("vLLM: start the model worker, load weights", "vllm", r"Loading weights took"),
    ("vLLM: compile and warm up the model", "vllm", r"KV cache size"),
    ("vLLM: profile, allocate the KV cache", "vllm", r"init engine \(profile"),
    ("OpenAI server: set up", None, None),  # READY: a line of its own on each side
    ("first request answered", None, None),
]
RAY_ONLY = {phase for phase, _, _ in MILESTONES[:5]}
READY = {"replica": r"Finished initializing replica", "bare": r"Starting vLLM (API )?server on"}
ANSWERED = r"POST /v1/chat/completions 200 "  # a replica's access log line, written when the request (stream) ends
RAY_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
VLLM_TIME = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d)")


def line_time(line):
    """The epoch time at which a Ray or vLLM log line was written (local time, as both write it)."""
    found = RAY_TIME.search(line)
    if found:
        return datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    found = VLLM_TIME.search(line)
    if found:
        return datetime.strptime(f"{datetime.now().year}-{found[1]}", "%Y-%m-%d %H:%M:%S").timestamp()
    return None


def first_time(files, pattern, since=None):
    """The earliest time a line matching `pattern` was written in any of `files` (at or after `since`, if given)."""
    times = []
    for path in files:
        for line in Path(path).read_text(errors="replace").splitlines():
            written = line_time(line) if re.search(pattern, line) else None
            if written is not None and (since is None or written >= since):
                times.append(written)
                break
    return min(times) if times else None


def controller_logs(log_folder):
    """Serve's controller's log files in a node's Ray log folder: its own log, and its actor's stderr, which has most of
    the same lines. Once an engine's exception has reached the controller (a replica whose engine died), the controller
    has imported vLLM, and from then on its lines went to its stderr alone (seen in CI, Ray 2.60, vLLM 0.29), though
    not all of them ("started successfully" went nowhere)."""
    folder = Path(log_folder)
    own = list(folder.glob("serve/controller_[0-9]*.log"))  # not the app builders' controller_build_*.log
    return own + [path for path in folder.glob("worker-*.err") if ":actor_name:ServeController" in head(path)]


def head(path, size=200):
    with open(path, errors="replace") as file:
        return file.read(size)


def replica_logs(log_folders):
    """The model replicas' log files under Ray log folders (one per node)."""
    return [path for folder in log_folders for path in Path(folder, "serve").glob("replica_*LLMServer*.log")]


def served_by(log_folders):
    """{x-request-id: [replica id, ...]} for every chat request that a replica's log shows answered (two replicas
    when it was retried)."""
    found = {}
    for path in replica_logs(log_folders):
        for line in path.read_text(errors="replace").splitlines():
            match = re.search(r"LLMServer:\S+ (\w+) (\S+) -- " + ANSWERED, line)
            if match:
                found.setdefault(match[2], []).append(match[1])
    return found


DEPLOYMENT = f"LLMServer:{MODEL_ID}"  # the model's deployment in the tutorial's CPU application


class ServeLogs:
    """Serve's logs of a one-node cluster whose Ray files are under `ray_tmp`: the controller's decisions and each
    model replica's own log."""

    def __init__(self, ray_tmp):
        self.folder = ray_logs(ray_tmp)  # Ray's log folder of the node
        self.logs = self.folder / "serve"

    def controller(self):
        return controller_logs(self.folder)

    def first(self, pattern, since=None):
        """When the controller first logged a line matching `pattern` (at or after `since`)."""
        return first_time(self.controller(), pattern, since=since)

    def controller_lines(self, pattern):
        """[(match, when)] for every controller line matching `pattern`, in the order logged: once each, though its
        log and its stderr both have most lines."""
        found = {}
        for path in self.controller():
            for line in path.read_text(errors="replace").splitlines():
                match = re.search(pattern, line)
                if match and line not in found:
                    found[line] = (match, line_time(line))
        return sorted(found.values(), key=lambda logged: logged[1])

    def started_replicas(self):
        """[(id, when it started successfully)] of the model's replicas, in order."""
        pattern = rf"Replica\(id='(\w+)', deployment='{DEPLOYMENT}'.*started successfully"
        return [(match[1], at) for match, at in self.controller_lines(pattern)]

    def stopped_replica(self, since):
        """(id, when) of the first model replica that Serve told to stop at or after `since`."""
        pattern = rf"Stopping Replica\(id='(\w+)', deployment='{DEPLOYMENT}'"
        return next(((match[1], at) for match, at in self.controller_lines(pattern) if at >= since), (None, None))

    def first_answer(self, replica, since=None):
        """When the replica's own log first shows a chat request it answered (at or after `since`)."""
        return first_time(list(self.logs.glob(f"replica_*_{replica}.log")), ANSWERED, since=since)

    def answers(self, replica):
        return sum(
            len(re.findall(ANSWERED, path.read_text(errors="replace")))
            for path in self.logs.glob(f"replica_*_{replica}.log")
        )

    def haproxy_dropped(self, replica, since):
        """When HAProxy on this node stopped sending to `replica` (told to stop at `since`): its first reload after
        the first update of its backends that leaves the replica out, or HAProxy's own shutdown (`serve shutdown`);
        None if neither is logged (yet)."""
        updated = None
        for path in self.logs.glob("proxy_*.log"):
            for line in path.read_text(errors="replace").splitlines():
                at = line_time(line)
                if at is None or at < since:
                    continue
                if "Shutting down HAProxyManager" in line:
                    return at
                if updated is None and "Got updated backend configs" in line and replica not in line:
                    updated = at
                elif updated is not None and "Successfully performed graceful HAProxy reload" in line:
                    return at
        return None


def phases(started, moments):
    """[(phase, start, seconds)] relative to `started`, for the milestones that were reached, in order."""
    result, previous = [], started
    for phase, _, _ in MILESTONES:
        moment = moments.get(phase)
        if moment is not None:
            moment = max(moment, previous)  # vLLM's whole seconds can fall before the millisecond line before them
            result.append((phase, round(previous - started, 2), round(moment - previous, 2)))
            previous = moment
    return result


# The quick start's steps as the README names them, each beginning at the first command (after the one before) that
# starts with the given text, in ci/time_quickstart.sh's log.
QUICKSTART_STEPS = [
    ("install the requirements (`bash ci/setup.sh`)", "bash ci/setup.sh"),
    ("start Ray and Serve", "python local_cluster.py start"),
    ("deploy (`serve run`) until the model answered", "serve run"),
    ("ask, stream, control the thinking", "serve status"),
    ("redeploy from the config file, ask again", "serve deploy"),
    ("shut down", "serve shutdown -y"),
]
QUICKSTART_COMMAND = re.compile(r"^\+ (\d+)s quickstart\.sh: (.*)$", re.M)  # the script's own commands, not nested
QUICKSTART_END = re.compile(r"^quickstart: exit status (\d+) after (\d+)s$", re.M)


def quickstart_machine(log):
    """The machine a ci/time_quickstart.sh log ran on, from its first two lines: its GPU, else its CPU cores."""
    cores, gpu = log.splitlines()[:2]
    return gpu.split(",")[0] if gpu != "no GPU" else f"{cores} CPU cores"


def quickstart_steps(log):
    """{step: seconds} of a ci/time_quickstart.sh log, and "in all"; None for a run that failed."""
    end = QUICKSTART_END.search(log)
    if not end or end[1] != "0":
        return None
    commands = [(int(seconds), command) for seconds, command in QUICKSTART_COMMAND.findall(log)]
    starts, after = [], -1
    for step, first in QUICKSTART_STEPS:
        seconds, after = next((s, i) for i, (s, c) in enumerate(commands) if i > after and c.startswith(first))
        starts.append((step, seconds))
    ends = [seconds for _, seconds in starts[1:]] + [int(end[2])]
    return {**{step: stop - start for (step, start), stop in zip(starts, ends)}, "in all": int(end[2])}
