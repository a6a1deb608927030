"""The load: streamed chat requests to an OpenAI-compatible endpoint, each timed chunk by chunk.

For a reasoning model the moment that matters is when the reader first sees the *answer*, so every request records
the time to its first token of any kind (TTFT), to its first reasoning token and to its first answer token (TTFO, time
to first output token, as AIPerf and GuideLLM name it).

The HTTP client is aiohttp, as in vLLM's own benchmark client: with httpx, at 16 streams on 2 cores, the same load
measured a TTFT p50 of 1,019 ms and 915 tokens/s where vLLM's client measured 127 ms and 1,537 (benchmark/peer_check.py
keeps the two within 20%).

The loads: run_load (a number of requests at a concurrency, or at vLLM's Poisson arrival times), SteadyChains (streams
of long chains that go on while a deployment changes) and statuses_at_once (a burst, held open: what is refused).
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy
from tqdm import tqdm

from harness.config import MODEL_ID, ROOT
from harness.servers import SERVE_URL
from tiny_reasoner import tasks

TOKENIZER = ROOT / "tiny_reasoner"


def default_prompts(count, seed=7):
    """The small model's own questions: letter counting and sums, interleaved."""
    letters = [item["prompt"] for item in tasks.held_out_letter_prompts(count, seed=seed)]
    sums = [item["prompt"] for item in tasks.sum_prompts()]
    return [letters[i // 2] if i % 2 == 0 else sums[(i * 37) % len(sums)] for i in range(count)]


# What a stream that breaks off raises: a reset, a closed connection, a timeout.
BROKEN = (aiohttp.ClientError, asyncio.TimeoutError)


def session(connections, timeout_s=1800):
    """An HTTP session for streams: at most `connections` open at once, each request given `timeout_s` in all."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


async def stream_chat(client, base_url, model, prompt, max_tokens, extra_body=None, headers=None, progress=None):
    """Stream one chat completion with `client` (a session()); return when each part arrived, the texts, and how the
    stream ended (done: it reached [DONE]). Raises one of BROKEN if the stream breaks off.

    extra_body: more request fields, e.g. {"ignore_eos": True} for outputs of exactly max_tokens tokens.
    headers: more request headers, e.g. {"x-request-id": ...}, which Serve's logs then show.
    progress: a dict that gets the status as soon as it arrives, and the count of text chunks so far, so that a caller
    still knows how far a stream got when it breaks off (and this raises).
    """
    progress = {} if progress is None else progress
    started = time.perf_counter()
    first = first_reasoning = first_answer = finish_reason = completion_tokens = None
    reasoning, answer, chunk_times, done = [], [], [], False
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},  # the last chunk then carries the token count
        "temperature": 0,
        **({"max_tokens": max_tokens} if max_tokens else {}),
        **(extra_body or {}),
    }
    async with client.post(f"{base_url}/chat/completions", json=body, headers=headers) as reply:
        progress.update(status=reply.status, chunks=0)
        async for raw in reply.content:  # one line at a time
            line = raw.decode().rstrip("\r\n")
            if line == "data: [DONE]":
                done = True
            if not line.startswith("data: ") or done:
                continue
            event = json.loads(line[6:])
            completion_tokens = (event.get("usage") or {}).get("completion_tokens", completion_tokens)
            choice = (event.get("choices") or [{}])[0]
            finish_reason = choice.get("finish_reason") or finish_reason
            delta = choice.get("delta") or {}
            now = time.perf_counter() - started
            text_reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            text_answer = delta.get("content")
            if text_reasoning or text_answer:
                progress["chunks"] += 1
                first = first if first is not None else now
                chunk_times.append((now, "reasoning" if text_reasoning else "answer"))
            if text_reasoning:
                first_reasoning = first_reasoning if first_reasoning is not None else now
                reasoning.append(text_reasoning)
            if text_answer:
                first_answer = first_answer if first_answer is not None else now
                answer.append(text_answer)
    return {
        "status": reply.status,
        "ttft": first,
        "ttfr": first_reasoning,
        "ttfo": first_answer,
        "e2e": time.perf_counter() - started,
        "reasoning": "".join(reasoning),
        "answer": "".join(answer),
        "chunks": chunk_times,
        "completion_tokens": completion_tokens,
        "finish_reason": finish_reason,
        "done": done,
    }


def broken(error):
    """The result of a stream that broke off before it ended: no times, no text, the error."""
    result = dict.fromkeys(("status", "ttft", "ttfr", "ttfo", "e2e", "completion_tokens", "finish_reason"))
    return {**result, "reasoning": "", "answer": "", "chunks": [], "done": False, "error": repr(error)[:300]}


def arrival_times(count, request_rate, seed=0):
    """When each of `count` requests is sent, in seconds from the start: all at once without a rate, else a Poisson
    process of `request_rate` requests per second drawn exactly as `vllm bench serve --request-rate --seed` draws it
    (numpy's generator seeded with `seed`, an exponential gap before each request, scaled so that the last is sent at
    count / request_rate), so that both clients send the same load at the same moments."""
    if not request_rate:
        return [0.0] * count
    gaps = numpy.random.RandomState(seed).gamma(1.0, 1.0 / request_rate, count)
    times = numpy.cumsum(gaps)
    return [float(t) for t in times * (count / request_rate) / times[-1]]


async def run_load(
    base_url, model, prompts, concurrency, max_tokens, label, extra_body=None, request_rate=None, seed=0
):
    """Send every prompt, at most `concurrency` at a time (and, with `request_rate`, at Poisson arrival times); return
    the results and the wall time of the run."""
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(prompts), desc=label, unit="req", leave=False)
    arrivals = arrival_times(len(prompts), request_rate, seed)
    async with session(concurrency) as client:

        async def one(prompt, arrival):
            await asyncio.sleep(max(0.0, started + arrival - time.perf_counter()))
            async with limit:
                try:
                    result = await stream_chat(client, base_url, model, prompt, max_tokens, extra_body)
                except BROKEN as error:  # counted as a failed request (not ok), not the end of the run
                    result = broken(error)
            bar.update()
            return result

        started = time.perf_counter()
        results = await asyncio.gather(*(one(p, a) for p, a in zip(prompts, arrivals)))
        wall = time.perf_counter() - started
    bar.close()
    return results, wall


def vllm_bench_serve(base_url, model, prompts, max_tokens, *options):
    """vLLM's own benchmark client (`vllm bench serve`, run from Python: the CPU build's `vllm` command cannot start
    it) on `prompts`, each sent as the user message of a chat request of at most `max_tokens` tokens; `options` are
    more of its flags (--max-concurrency, --request-rate, --ignore-eos, --goodput ...). Returns its result file."""
    from vllm.benchmarks.serve import add_cli_args, main

    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as folder:
        dataset = Path(folder) / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        parser = argparse.ArgumentParser()
        add_cli_args(parser)
        args = parser.parse_args(
            ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions"]
            + ["--base-url", base_url.removesuffix("/v1"), "--model", model, "--tokenizer", str(TOKENIZER)]
            + ["--dataset-name", "custom"]
            + ["--dataset-path", str(dataset), "--skip-chat-template", "--disable-shuffle"]
            + ["--num-prompts", str(len(prompts)), "--custom-output-len", str(max_tokens), "--temperature", "0"]
            + ["--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", folder]
            + ["--result-filename", "result.json", *map(str, options)]
        )
        outcome = main(args)
        if asyncio.iscoroutine(outcome):
            asyncio.run(outcome)
        result = json.loads((Path(folder) / "result.json").read_text())
    if result["completed"] != len(prompts):
        raise RuntimeError(f"vLLM's client: {result['completed']} of {len(prompts)} requests completed")
    return result


class SteadyChains:
    """A steady load of streamed chains of max_tokens tokens each (ignore_eos) to the tutorial's endpoint, whose number
    of streams can change while it runs; every chain is logged with the event it was sent under. The first chains of
    streams 0, 1, ... start stagger_s apart, in groups of `period` streams."""

    def __init__(self, client, max_tokens, stagger_s, period, event="start"):
        self.client, self.event, self.wanted, self.log, self.streams = client, event, 0, [], {}
        self.max_tokens, self.stagger_s, self.period = max_tokens, stagger_s, period
        self.prompts = default_prompts(64)

    def set_streams(self, count, event):
        self.wanted, self.event = count, event
        for index in range(count):
            if index not in self.streams or self.streams[index].done():
                self.streams[index] = asyncio.create_task(self.stream(index))

    async def stream(self, index):
        await asyncio.sleep(index % self.period * self.stagger_s)
        while index < self.wanted:
            entry = {"id": f"lc-{len(self.log)}", "event": self.event, "sent": time.time(), "status": None}
            entry.update(done=False, error=None, tokens=0)
            self.log.append(entry)
            try:
                result = await stream_chat(
                    self.client,
                    SERVE_URL,
                    MODEL_ID,
                    self.prompts[len(self.log) % len(self.prompts)],
                    self.max_tokens,
                    {"ignore_eos": True},
                    headers={"x-request-id": entry["id"]},
                    progress=entry,  # its status as soon as it comes, and its chunks so far
                )
                entry["done"] = result["done"]
            except BROKEN as error:  # a reset or a closed connection
                entry["error"] = f"{type(error).__name__}: {error}"[:200]
            entry["tokens"] = entry.pop("chunks", 0)
            entry["ended"] = time.time()

    def in_flight(self, at):
        return [entry for entry in self.log if entry["sent"] <= at < entry.get("ended", float("inf"))]

    async def until_ended(self, entries, timeout_s=600):
        deadline = time.time() + timeout_s
        while any("ended" not in entry for entry in entries) and time.time() < deadline:
            await asyncio.sleep(1)

    async def stop(self):
        self.wanted = 0
        await asyncio.gather(*self.streams.values())


async def wait_for(condition, timeout_s, what):
    """Until condition() holds, checked every second; TimeoutError after timeout_s."""
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(1)


OUTCOMES = ("completed", "cut", "dropped", "refused")


def ending(entry):
    """completed: the stream reached [DONE]; cut: its reply began, then broke off (the reader saw part of a chain,
    which no client retries); dropped: the connection broke before any reply (the OpenAI client sends it again);
    refused: a status other than 200."""
    if entry["done"]:
        return "completed"
    if entry["status"] is None:
        return "dropped"
    return "cut" if entry["status"] == 200 else "refused"


async def statuses_at_once(client, count, max_tokens, hold_s=30):
    """`count` streamed chains at once to the tutorial's endpoint, each held open until every one has its status (or
    hold_s passed), then closed: how many were accepted (200), refused (any other status) or got none in time, how
    long the slowest refusal took, and what the first said."""
    answered = []
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Count the letter r in strawberry."}]}
    body.update(stream=True, max_tokens=max_tokens, ignore_eos=True)

    async def one():
        started, status, seconds, text = time.time(), None, hold_s, "no status within the hold"
        try:
            async with asyncio.timeout(hold_s):
                async with client.post(f"{SERVE_URL}/chat/completions", json=body) as reply:
                    status, seconds = reply.status, round(time.time() - started, 2)
                    text = "" if status == 200 else (await reply.read()).decode(errors="replace")[:300]
                    answered.append(status)
                    while len(answered) < count:  # hold the stream open: the server counts it in flight
                        await asyncio.sleep(0.2)
        except TimeoutError:
            pass
        except BROKEN as error:
            text = f"{type(error).__name__}: {error}"[:300]
        return status, seconds, text

    statuses = await asyncio.gather(*(one() for _ in range(count)))
    refused = [(status, seconds, text) for status, seconds, text in statuses if status not in (None, 200)]
    return {
        "requests": count,
        "accepted": sum(status == 200 for status, _, _ in statuses),
        "refused": len(refused),
        "no_status": sum(status is None for status, _, _ in statuses),
        "statuses": sorted({str(status) for status, _, _ in statuses}),
        "slowest_refusal_s": max((seconds for _, seconds, _ in refused), default=None),
        "refusal_body": refused[0][2] if refused else None,
    }
