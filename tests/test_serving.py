"""What holds when the tutorial's CPU deployment meets bad input, load, a client that leaves and a dead engine.
A real Ray cluster, the real vLLM CPU engine, real HTTP on loopback. Each test leaves the deployment answering, and
saves what it measured in bench_results/serving/ (ignored by git); run with `-s` to see the tables."""

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.config import MODEL_ID, NOTEBOOK_QUESTIONS, ROOT
from harness.load import BROKEN, session, stream_chat
from harness.stats import percentiles
from tiny_reasoner import tasks

CHAT, COMPLETIONS = "/chat/completions", "/completions"
HELLO = [{"role": "user", "content": "Hi"}]
TOO_LONG = "strawberry " * 200  # about 2,200 byte tokens: twice the context of 1,024


def save(name, result):
    print(f"\n{name}: {json.dumps(result, indent=1)}")
    (ROOT / "bench_results" / "serving").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench_results" / "serving" / f"{name}.json").write_text(json.dumps(result, indent=2))


def good_request(base_url):
    reply = httpx.post(
        f"{base_url}{CHAT}",
        timeout=60,
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "How many R's are in the word strawberry?"}]},
    )
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


BAD_REQUESTS = [
    # (what, path, body: a dict is sent as JSON, bytes as they are)
    ("malformed JSON", CHAT, b'{"model": MODEL_ID, "messages": ['),
    ("empty body", CHAT, b""),
    ("body is a JSON list", CHAT, b"[]"),
    ("messages missing", CHAT, {"model": MODEL_ID}),
    ("messages is a string", CHAT, {"model": MODEL_ID, "messages": "Hi"}),
    ("message content is a number", CHAT, {"model": MODEL_ID, "messages": [{"role": "user", "content": 42}]}),
    ("unknown role", CHAT, {"model": MODEL_ID, "messages": [{"role": "wizard", "content": "Hi"}]}),
    ("unknown model", CHAT, {"model": "gpt-17", "messages": HELLO}),
    ("negative max_tokens", CHAT, {"model": MODEL_ID, "messages": HELLO, "max_tokens": -1}),
    ("huge max_tokens", CHAT, {"model": MODEL_ID, "messages": HELLO, "max_tokens": 10**9}),
    ("prompt longer than the context", CHAT, {"model": MODEL_ID, "messages": [{"role": "user", "content": TOO_LONG}]}),
    (
        "prompt longer than the context, streaming",
        CHAT,
        {"model": MODEL_ID, "messages": [{"role": "user", "content": TOO_LONG}], "stream": True},
    ),
    ("temperature -1", CHAT, {"model": MODEL_ID, "messages": HELLO, "temperature": -1}),
    ("top_p 2", CHAT, {"model": MODEL_ID, "messages": HELLO, "top_p": 2}),
    ("n 0", CHAT, {"model": MODEL_ID, "messages": HELLO, "n": 0}),
    (
        "temperature is a string, streaming",
        CHAT,
        {"model": MODEL_ID, "messages": HELLO, "temperature": "hot", "stream": True},
    ),
    ("non-UTF-8 bytes", CHAT, b'{"model": MODEL_ID, "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    (
        "10 MB body",
        CHAT,
        json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "a" * 10_000_000}]}).encode(),
    ),
    ("completions: prompt missing", COMPLETIONS, {"model": MODEL_ID}),
    (
        "completions: negative max_tokens, streaming",
        COMPLETIONS,
        {"model": MODEL_ID, "prompt": "Hi", "max_tokens": -5, "stream": True},
    ),
    ("completions: unknown model", COMPLETIONS, {"model": "gpt-17", "prompt": "Hi"}),
]


def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_the_server_keeps_serving(tutorial_app):
    table = []
    for what, path, body in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = httpx.post(
            tutorial_app + path, content=content, timeout=120, headers={"Content-Type": "application/json"}
        )
        table.append({"request": what, "status": reply.status_code, "message": error_message(reply)[:160]})
        good_request(tutorial_app)  # whatever came before, a good request still works
    save("bad_requests", table)
    wrong = [row for row in table if not 400 <= row["status"] < 500 or not row["message"].strip()]
    assert not wrong, wrong
    # With direct streaming vLLM's own app answers: an OpenAI-shaped 404. (Ray's standard ingress answers FastAPI's
    # {"detail": ...} instead; the notebook says so.)
    unknown = next(row for row in table if row["request"] == "unknown model")
    assert unknown["status"] == 404 and "gpt-17" in unknown["message"]


def metric(name):
    """Sum of a Prometheus metric over its labels, from the Ray node's exporter."""
    from tests.plugin import SharedCluster

    text = httpx.get(f"http://127.0.0.1:{SharedCluster.METRICS_PORT}/metrics", timeout=10).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and line[len(name)] in "{ "
    ]
    return sum(values) if values else None


def wait_for_metric(name, predicate, timeout=60):
    deadline = time.time() + timeout
    while True:
        value = metric(name)
        if value is not None and predicate(value) or time.time() > deadline:
            return value
        time.sleep(1)


def settled_metric(name, quiet_s=12, timeout=90):
    """The metric once it has stopped changing: Ray exports metrics every second, so a count lags behind."""
    deadline, last, since = time.time() + timeout, metric(name), time.time()
    while time.time() < deadline:
        time.sleep(1)
        value = metric(name)
        if value != last:
            last, since = value, time.time()
        elif time.time() - since >= quiet_s:
            break
    return last


async def load(base_url, prompts, concurrency):
    limit = asyncio.Semaphore(concurrency)
    async with session(concurrency, timeout_s=300) as client:

        async def one(prompt):
            async with limit:
                try:
                    return await stream_chat(client, base_url, MODEL_ID, prompt, max_tokens=None)
                except BROKEN as error:
                    return {"status": None, "error": repr(error)}

        return await asyncio.gather(*(one(p) for p in prompts))


def reasoning_then_answer(result):
    """Reasoning chunks first, then answer chunks, and no think tag in the answer."""
    kinds = [kind for _, kind in result["chunks"]]
    return tasks.streamed_in_order(kinds) and tasks.well_formed(result["reasoning"], result["answer"])


def test_400_streams_at_concurrency_32_lose_nothing(tutorial_app):
    prompts = [item["prompt"] for item in tasks.held_out_letter_prompts(200) + tasks.sum_prompts()]
    before = settled_metric("ray_vllm_request_success_total") or 0
    started = time.time()
    results = asyncio.run(load(tutorial_app, prompts, concurrency=32))
    wall = time.time() - started
    complete = [r for r in results if r["status"] == 200 and r["finish_reason"] and r["done"]]
    wait_for_metric("ray_vllm_request_success_total", lambda v: v >= before + len(prompts))
    seen = settled_metric("ray_vllm_request_success_total") - before
    latency = percentiles(r["e2e"] for r in complete)
    result = {
        "sent": len(prompts),
        "completed": len(complete),
        "lost": len(prompts) - len(complete),
        "reasoning_then_answer": sum(map(reasoning_then_answer, complete)),
        "engine_saw": seen,
        "wall_s": round(wall, 1),
        "p50_s": round(latency["p50"], 2),
        "p99_s": round(latency["p99"], 2),
    }
    save("load", result)
    assert len(complete) == len(prompts), [r for r in results if r not in complete][:3]
    assert result["reasoning_then_answer"] == len(prompts)
    assert seen == len(prompts)


def test_a_client_that_disconnects_mid_stream_aborts_its_request(tutorial_app):
    """vLLM counts no aborted requests, so watch the tokens: a request for 900 tokens whose client left after the
    first few chunks must stop generating."""
    generated_before = settled_metric("ray_vllm_generation_tokens_total") or 0
    body = {"model": MODEL_ID, "prompt": "Spell", "max_tokens": 900, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{tutorial_app}{COMPLETIONS}", json=body) as reply:
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
    save(
        "disconnect",
        {"running_after": running, "seconds_until_seen_idle": round(seconds, 1), "tokens_generated_of_900": generated},
    )
    assert running == 0 and generated < 300, "the engine kept generating for a client that had left"
    good_request(tutorial_app)


def test_benchmark_smoke_run(tutorial_app, tmp_path):
    """A few requests through the benchmark's command line: every metric present, reasoning timed before the
    answer, the notebook's questions answered."""
    out = tmp_path / "benchmark.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark",
            "--base-url",
            tutorial_app,
            "--requests",
            "4",
            "--concurrency",
            "2",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    server = json.loads(out.read_text())["servers"][tutorial_app]
    result = server["runs"][0]
    assert result["ok"] == result["requests"] == 4
    assert 0 < result["ttfr_s"]["p50"] < result["ttfo_s"]["p50"] <= result["e2e_s"]["p50"]
    assert result["reasoning_tokens_mean"] > 0 and result["answer_tokens_mean"] > 0
    assert 0 < result["chunk_gap_s"]["p50"] <= result["chunk_gap_s"]["p99"]
    assert result["output_tokens_per_s"] > 0 and out.with_suffix(".png").stat().st_size > 10_000
    questions = server["notebook_questions"]
    assert set(questions) == set(NOTEBOOK_QUESTIONS)
    for name, r in questions.items():
        assert r["status"] == 200 and 0 < r["ttfr"] < r["ttfo"] < r["e2e"], (name, r)
        assert r["reasoning_tokens"] > 0 and r["answer_tokens"] > 0, (name, r)


def test_the_model_is_listed(tutorial_app):
    reply = httpx.get(tutorial_app + "/models", timeout=30)
    assert reply.status_code == 200 and MODEL_ID in [model["id"] for model in reply.json()["data"]], reply.text


def notebook_bash_cell(cell_id):
    """A %%bash cell of the notebook, as a bash script."""
    cells = {cell["id"]: "".join(cell["source"]) for cell in json.loads((ROOT / "notebook.ipynb").read_text())["cells"]}
    return cells[cell_id].removeprefix("%%bash\n")


def test_the_thinking_off_cell_gets_an_answer_at_once_and_finds_it_under_reasoning(tutorial_app):
    """The notebook's claim for its thinking-off cell, run as the notebook runs it: with enable_thinking false the
    model answers at once, and the deepseek_r1 parser, seeing no </think>, hands that answer over as `reasoning` with
    `content` empty. With thinking on, the same question gets a chain of thought, then the answer in `content`."""
    env = {**os.environ, "MODEL_ID": MODEL_ID, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    off = subprocess.run(["bash", "-c", notebook_bash_cell("thinking-off")], env=env, capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    message = ast.literal_eval(off.stdout.strip().splitlines()[-1])
    assert message["content"] is None and message["reasoning"].count("\n") == 0, message
    assert re.fullmatch(r'The letter "r" appears \d+ times? in "strawberry"\.', message["reasoning"].strip()), message
    on = good_request(tutorial_app)
    assert on["reasoning"].startswith('Spell "strawberry"') and on["content"].strip().startswith('The letter "r"')


def test_the_clients_find_the_model_in_a_terminal_without_the_tutorials_settings(tutorial_app):
    """A new terminal, tutorial_env.sh not sourced: no MODEL_ID, so the scripts ask the deployment what it serves."""
    env = {name: value for name, value in os.environ.items() if name not in ("MODEL_ID", "BASE_URL", "API_KEY")}
    printed = {}
    for script in ("wait_for_model.py", "client.py"):
        run = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        printed[script] = run.stdout
    assert f"{MODEL_ID} answered after" in printed["wait_for_model.py"], printed
    assert "Reasoning:" in printed["client.py"] and "Answer:" in printed["client.py"], printed
