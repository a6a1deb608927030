"""What holds when the tutorial's CPU deployment meets bad input, load, a client that leaves, a dead engine and a
stranger on the network. A real Ray cluster, the real vLLM CPU engine, real HTTP on loopback; everything started
here is stopped here, also when a test fails. Run with `-s` to see the measured tables."""

import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from benchmark import one_request
from ci.local_cluster import ROOT, serve_deployment, wait_for_answer
from tiny_reasoner import tasks

BASE = "http://127.0.0.1:8000"
MODEL = "tiny-reasoner"
METRICS_PORT = 8085
RESULTS = {}


@pytest.fixture(scope="module")
def deployment():
    # Export metrics every second rather than every 10 s, so that the counts the tests compare settle quickly.
    try:
        with serve_deployment(ROOT / "serve_tiny_reasoner.yaml", env={"RAY_metrics_report_interval_ms": "1000"},
                              ray_start_args=[f"--metrics-export-port={METRICS_PORT}"]):
            yield BASE
    finally:
        if RESULTS:  # the measured tables, also kept in bench_results/ (ignored by git)
            print("\n" + json.dumps(RESULTS, indent=2))
            (ROOT / "bench_results").mkdir(exist_ok=True)
            (ROOT / "bench_results" / "reliability.json").write_text(json.dumps(RESULTS, indent=2))


def good_request():
    reply = httpx.post(f"{BASE}/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "How many R's are in the word strawberry?"}]})
    assert reply.status_code == 200, reply.text
    message = reply.json()["choices"][0]["message"]
    assert tasks.well_formed(message["reasoning"], message["content"])
    return message


def error_message(reply):
    try:
        body = reply.json()
    except ValueError:
        return reply.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("message", "")
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HELLO = [{"role": "user", "content": "Hi"}]
TOO_LONG = "strawberry " * 200  # about 2,200 byte tokens: twice the context of 1,024
BAD_REQUESTS = [
    # (what, path, body: dict is sent as JSON, bytes as they are)
    ("malformed JSON", CHAT, b'{"model": "tiny-reasoner", "messages": ['),
    ("empty body", CHAT, b""),
    ("body is a JSON list", CHAT, b"[]"),
    ("messages missing", CHAT, {"model": MODEL}),
    ("messages is a string", CHAT, {"model": MODEL, "messages": "Hi"}),
    ("message content is a number", CHAT, {"model": MODEL, "messages": [{"role": "user", "content": 42}]}),
    ("unknown role", CHAT, {"model": MODEL, "messages": [{"role": "wizard", "content": "Hi"}]}),
    ("unknown model", CHAT, {"model": "gpt-17", "messages": HELLO}),
    ("negative max_tokens", CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": -1}),
    ("huge max_tokens", CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": 10 ** 9}),
    ("prompt longer than the context", CHAT, {"model": MODEL, "messages": [{"role": "user", "content": TOO_LONG}]}),
    ("prompt longer than the context, streaming", CHAT,
     {"model": MODEL, "messages": [{"role": "user", "content": TOO_LONG}], "stream": True}),
    ("temperature -1", CHAT, {"model": MODEL, "messages": HELLO, "temperature": -1}),
    ("top_p 2", CHAT, {"model": MODEL, "messages": HELLO, "top_p": 2}),
    ("n 0", CHAT, {"model": MODEL, "messages": HELLO, "n": 0}),
    ("temperature is a string, streaming", CHAT, {"model": MODEL, "messages": HELLO, "temperature": "hot",
                                                  "stream": True}),
    ("non-UTF-8 bytes", CHAT, b'{"model": "tiny-reasoner", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    ("10 MB body", CHAT, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a" * 10_000_000}]})
     .encode()),
    ("completions: prompt missing", COMPLETIONS, {"model": MODEL}),
    ("completions: negative max_tokens, streaming", COMPLETIONS,
     {"model": MODEL, "prompt": "Hi", "max_tokens": -5, "stream": True}),
    ("completions: unknown model", COMPLETIONS, {"model": "gpt-17", "prompt": "Hi"}),
]


def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_the_server_keeps_serving(deployment):
    table = []
    for what, path, body in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = httpx.post(BASE + path, content=content, timeout=120, headers={"Content-Type": "application/json"})
        message = error_message(reply)
        table.append({"request": what, "status": reply.status_code, "message": message[:160]})
        good_request()  # whatever came before, a good request still works
    RESULTS["bad_requests"] = table
    print("\n| request | status | message |\n| --- | --- | --- |")
    for row in table:
        print(f"| {row['request']} | {row['status']} | {row['message'][:100]} |")
    wrong = [row for row in table if not 400 <= row["status"] < 500 or not row["message"].strip()]
    assert not wrong, wrong
    # With direct streaming vLLM's own app answers: an OpenAI-shaped 404. (Ray's standard ingress answers FastAPI's
    # {"detail": ...} instead; the notebook says so.)
    unknown = next(row for row in table if row["request"] == "unknown model")
    assert unknown["status"] == 404 and "gpt-17" in unknown["message"]


def metric(name, having=""):
    """Sum of a Prometheus metric over its labels (those lines that contain `having`), from the Ray node's exporter."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and line[len(name)] in "{ " and having in line]
    return sum(values) if values else None


def wait_for_metric(name, predicate, timeout=60, having=""):
    deadline = time.time() + timeout
    while True:
        value = metric(name, having)
        if value is not None and predicate(value) or time.time() > deadline:
            return value
        time.sleep(1)


def settled_metric(name, quiet_s=12, timeout=90, having=""):
    """The metric once it has stopped changing: Ray exports metrics every few seconds, so a count lags behind."""
    deadline, last, since = time.time() + timeout, metric(name, having), time.time()
    while time.time() < deadline:
        time.sleep(1)
        value = metric(name, having)
        if value != last:
            last, since = value, time.time()
        elif time.time() - since >= quiet_s:
            break
    return last


async def load(prompts, concurrency):
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(prompt):
            async with limit:
                try:
                    return await one_request(client, f"{BASE}/v1", MODEL, prompt, max_tokens=None)
                except httpx.HTTPError as error:
                    return {"status": None, "error": repr(error)}
        return await asyncio.gather(*(one(p) for p in prompts))


def test_400_streams_at_concurrency_32_lose_nothing(deployment):
    items = tasks.held_out_letter_prompts(200) + tasks.sum_prompts()
    prompts = [item["prompt"] for item in items]
    before = settled_metric("ray_vllm_request_success_total") or 0
    started = time.time()
    results = asyncio.run(load(prompts, concurrency=32))
    wall = time.time() - started
    complete = [r for r in results if r["status"] == 200 and r["finish_reason"] and r["done"]]
    kinds = lambda r: [kind for _, kind in r["chunks"]]  # noqa: E731
    split_right = [r for r in complete if kinds(r) and kinds(r)[0] == "reasoning" and "answer" in kinds(r)
                   and "reasoning" not in kinds(r)[kinds(r).index("answer"):]
                   and not any(tag in r["answer"] for tag in tasks.THINK_TAGS)]
    wait_for_metric("ray_vllm_request_success_total", lambda v: v >= before + len(prompts))
    seen = settled_metric("ray_vllm_request_success_total") - before
    latencies = sorted(r["e2e"] for r in complete)
    RESULTS["load"] = {"sent": len(prompts), "completed": len(complete), "lost": len(prompts) - len(complete),
                       "split_right": len(split_right), "engine_saw": seen, "wall_s": round(wall, 1),
                       "p50_s": round(latencies[len(latencies) // 2], 2),
                       "p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 2)}
    print(RESULTS["load"])
    assert len(complete) == len(prompts), [r for r in results if r not in complete][:3]
    assert len(split_right) == len(prompts)
    assert seen == len(prompts)


def test_a_client_that_disconnects_mid_stream_aborts_its_request(deployment):
    """vLLM counts no aborted requests, so watch the tokens: a request for 900 tokens whose client left after the
    first few chunks must stop generating, and nothing may stay running."""
    generated_before = settled_metric("ray_vllm_generation_tokens_total") or 0
    body = {"model": MODEL, "prompt": "Spell", "max_tokens": 900, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{BASE}{COMPLETIONS}", json=body) as reply:
        assert reply.status_code == 200
        chunks = 0
        for line in reply.iter_lines():
            chunks += line.startswith("data: ")
            if chunks == 5:
                break
    left = time.time()  # leaving the `with` closed the connection mid-stream
    running = wait_for_metric("ray_vllm_num_requests_running", lambda v: v == 0, timeout=30)
    seconds = time.time() - left
    generated = settled_metric("ray_vllm_generation_tokens_total") - generated_before
    RESULTS["disconnect"] = {"running_after": running, "seconds_until_seen_idle": round(seconds, 1),
                             "tokens_generated_of_900": generated}
    print(RESULTS["disconnect"])
    assert running == 0 and generated < 300, "the engine kept generating for a client that had left"
    good_request()


def test_benchmark_smoke_run(deployment, tmp_path):
    """A few requests through benchmark.py: every metric present, reasoning timed before the answer."""
    out = tmp_path / "benchmark.json"
    run = subprocess.run([sys.executable, "benchmark.py", "--base-url", f"{BASE}/v1", "--requests", "4",
                          "--concurrency", "2", "--repeats", "1", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    server = json.loads(out.read_text())["servers"][f"{BASE}/v1"]
    result = server["runs"][0]
    assert result["ok"] == result["requests"] == 4
    assert 0 < result["ttfr_s"]["p50"] < result["ttfa_s"]["p50"] <= result["e2e_s"]["p50"]
    assert result["reasoning_tokens_mean"] > 0 and result["answer_tokens_mean"] > 0
    assert result["output_tokens_per_s"] > 0 and out.with_suffix(".png").stat().st_size > 10_000
    # The notebook's questions, each streamed alone: it thinks, then answers.
    questions = server["notebook_questions"]
    assert set(questions) == set(tasks.NOTEBOOK_QUESTIONS)
    for name, r in questions.items():
        assert r["status"] == 200 and 0 < r["ttfr"] < r["ttfa"] < r["e2e"], (name, r)
        assert r["reasoning_tokens"] > 0 and r["answer_tokens"] > 0, (name, r)


def engine_processes():
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if "EngineCore" in (p.info["name"] or "") or "EngineCore" in " ".join(p.info["cmdline"] or [])]


def test_a_killed_engine_is_replaced_and_the_endpoint_answers_again(deployment):
    engines = engine_processes()
    assert engines, "no vLLM engine process found"
    for process in engines:
        process.kill()
    try:
        answered = wait_for_answer(f"{BASE}/v1", MODEL, started=time.time(), timeout=300)
    except TimeoutError:
        answered = None
    RESULTS["engine_kill"] = {"seconds_to_answer_again": round(answered, 1) if answered else None,
                              "new_engine_pids": [p.pid for p in engine_processes()]}
    assert answered is not None, "the endpoint did not answer within 300s after the engine was killed"
    assert {p.pid for p in engine_processes()}.isdisjoint({p.pid for p in engines})
    good_request()
    # Nothing of the dead engine lives on: no vLLM process whose parent is gone.
    orphans = [p.pid for p in psutil.process_iter(["name", "ppid"])
               if (p.info["name"] or "").startswith("VLLM::") and p.info["ppid"] == 1]
    RESULTS["engine_kill"]["orphaned_vllm_processes"] = orphans
    assert not orphans, orphans


def test_the_endpoint_listens_on_loopback_only(deployment):
    """Port 8000 answers on loopback only, and no port the cluster opened on another address serves the model."""
    with socket.create_connection(("127.0.0.1", 8000), timeout=5):
        pass
    addresses = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family == socket.AF_INET and not a.address.startswith("127.")]
    assert addresses, "this machine has no other IPv4 address to try"
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, 8000), timeout=5).close()
    open_ports = sorted({c.laddr.port for c in psutil.net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN and not c.laddr.ip.startswith(("127.", "::1", "::ffff:127."))})
    answered = {}
    for address in addresses:
        for port in open_ports:
            try:
                reply = httpx.post(f"http://{address}:{port}{CHAT}", timeout=5,
                                   json={"model": MODEL, "messages": HELLO, "max_tokens": 2})
                answered[port] = reply.status_code
            except httpx.HTTPError:
                pass
    RESULTS["loopback_only"] = {"refused_on": addresses, "other_open_ports": open_ports,
                                "http_status_by_port": answered}
    assert 200 not in answered.values(), answered
