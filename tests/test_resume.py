"""A stream whose engine dies in mid-reasoning resumes (issue 37): client_streaming.py, run as the reader runs it,
sends the chain so far again, and the replica that replaces the dead one continues it. The tutorial's CPU
deployment, its real engine killed by PID (only the tests' cluster's processes), the real OpenAI client."""

import os
import re
import subprocess
import sys
import threading
import time

import psutil

from harness.config import MODEL_ID, ROOT
from harness.servers import wait_for_answer
from tests.test_serving import good_request, save
from tiny_reasoner import tasks

BROKE = re.compile(r"\n\[the stream broke: [^\]\n]*\]\n")  # the one line client_streaming.py prints for a break


def cluster_processes():
    """The processes of the tests' cluster (its process session): never another Ray or vLLM on this machine."""
    import local_cluster

    return local_cluster.session_processes(local_cluster.started_session())


def engine_processes():
    """The engines of the tutorial application's replicas (not those of an application that another test deployed
    beside it and that may still be stopping)."""
    engines = []
    for process in cluster_processes():
        try:
            if process.name().startswith("ray::ServeReplica:default:LLMServer"):
                engines += [child for child in process.children() if "EngineCore" in child.name()]
        except psutil.NoSuchProcess:
            pass
    return engines


def stream(base_url, question, kill_after_bytes=None, slice_s=0.02):
    """`python client_streaming.py QUESTION`'s output, the times its bytes came, and when the engine was killed.

    With `kill_after_bytes`, the engine is killed once the client has printed that many bytes of reasoning. On 2 cores
    the engine writes a whole chain in about half a second, sooner than a test sees the first bytes of it; so until
    then it runs in slices of `slice_s`, stopped in between (SIGSTOP/SIGCONT), and is killed in one of the pauses.
    On busy cores this process may wake late and the engine run on to the answer: then it is not killed (None)."""
    env = {**os.environ, "BASE_URL": base_url, "MODEL_ID": MODEL_ID}
    engines = engine_processes() if kill_after_bytes else []
    for process in engines:
        process.suspend()
    client = subprocess.Popen(
        [sys.executable, "client_streaming.py", question], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    out, arrivals, killed_at = bytearray(), [], None

    def read():
        while chunk := client.stdout.read1(4096):
            out.extend(chunk)
            arrivals.append((len(out), time.time()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while engines and len(out) < kill_after_bytes and client.poll() is None and time.time() < deadline:
            for process in engines:
                process.resume()
            time.sleep(slice_s)
            for process in engines:
                process.suspend()
            time.sleep(0.2)  # the client reads and prints what the slice wrote
        if engines and client.poll() is None and b"Answer:" not in out:  # still reasoning
            for process in engines:
                process.kill()
            killed_at = time.time()
    finally:
        if engines and killed_at is None:
            for process in engines:
                process.resume()
    assert client.wait(timeout=400) == 0
    reader.join(timeout=30)
    return bytes(out).decode(), arrivals, killed_at


def test_a_killed_engine_is_replaced_and_the_chain_it_was_streaming_resumes(tutorial_app):
    # A long chain of the small model: a letter counted in a held-out word of 13 letters, spelled out line by line.
    item = next(i for i in tasks.held_out_letter_prompts() if len(i["word"]) == 13 and i["expected"] > 0)
    uninterrupted, _, _ = stream(tutorial_app, item["prompt"])
    reasoning, answer = uninterrupted.split("\n\nAnswer:\n")
    assert tasks.answer_correct(item, answer), uninterrupted
    engines = engine_processes()
    assert engines, "no vLLM engine process found"

    # Killed a few tokens into the reasoning; tried again with shorter slices where the engine ran on to the answer.
    kill_after_bytes = len("Reasoning:\n") + 12
    try:
        for slice_s in (0.02, 0.01, 0.005):
            resumed, arrivals, killed_at = stream(tutorial_app, item["prompt"], kill_after_bytes, slice_s)
            if killed_at:
                break
        assert killed_at, (
            f"each time the engine ran on to the answer before the client showed its reasoning:\n{resumed}"
        )
        breaks = BROKE.findall(resumed)
        broke_at = resumed.find(breaks[0]) if breaks else len(resumed)
        result = {
            "killed_after_bytes": kill_after_bytes,
            "slice_s": slice_s,
            "broke": breaks,
            # The stall: from the kill to the first byte of the continued chain.
            "stall_s": round(min((t for n, t in arrivals if n > broke_at + len(breaks[0])), default=0) - killed_at, 1)
            if breaks
            else None,
            "output": resumed,
            "new_engine_pids": [p.pid for p in engine_processes()],
        }
        save("engine_kill", result)
        assert len(breaks) == 1 and broke_at < len(reasoning), resumed  # it broke once, in mid-reasoning, and said so
        # One continuous chain: without that line, the text an uninterrupted run writes (greedy decoding), right answer.
        assert BROKE.sub("", resumed) == uninterrupted, resumed
        new_engines = {p.pid for p in engine_processes()}
        assert new_engines and new_engines.isdisjoint({p.pid for p in engines}), "no new engine replaced the killed one"
    finally:
        # Whatever happened above, the tests after this one get an application that answers.
        wait_for_answer(tutorial_app, MODEL_ID, time.time(), timeout=300)
    good_request(tutorial_app)
    # Nothing of the dead engine lives on: no vLLM process whose parent is gone.
    orphans = []
    for process in cluster_processes():
        try:
            if process.name().startswith("VLLM::") and process.ppid() == 1:
                orphans.append(process.pid)
        except psutil.NoSuchProcess:
            pass
    assert not orphans, orphans


def test_a_request_refused_on_purpose_is_not_sent_again(tutorial_app):
    """A 4xx (here an unknown model: 404) is raised at once, not resumed: the same request would be refused again."""
    env = {**os.environ, "BASE_URL": tutorial_app, "MODEL_ID": "no-such-model"}
    began = time.time()
    client = subprocess.run(
        [sys.executable, "client_streaming.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert client.returncode != 0 and "NotFoundError" in client.stderr, client.stderr[-2000:]
    assert "the stream broke" not in client.stdout and time.time() - began < 30, client.stdout
