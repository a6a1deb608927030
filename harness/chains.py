"""A load of whole chains sent by the tutorial's own client (resumable_stream.py), each question one that the small
model's answer can be checked against: plain (a stream that breaks is a lost chain, as with the OpenAI client alone)
or resuming (resumable_stream.stream_chain() sends the chain so far again, and a replica continues it)."""

import time

import resumable_stream
from harness.config import MODEL_ID
from harness.servers import SERVE_URL
from tiny_reasoner import tasks


def questions(count=16):
    """Held-out letter counts on the longest words: chains of 14 to 16 lines, greedy, each answer checkable."""
    return [item for item in tasks.held_out_letter_prompts() if len(item["word"]) >= 12][:count]


def plain_chain(messages, **options):
    """A stream that is lost where it breaks, as with the OpenAI client alone: stream_chain() that never resends."""
    return resumable_stream.stream_chain(messages, max_breaks=0, **options)


def run_chain(entry, item, resume):
    """Stream one chain into `entry` (already in the load's log, with its id and the time it was sent): its text,
    where it broke (time, characters received so far), when it went on again, and whether it finished right."""
    entry.update(client="resuming" if resume else "plain", question=item["prompt"], reasoning="", answer="")
    entry.update(breaks=[], resumed=[], error=None)
    chain = resumable_stream.stream_chain if resume else plain_chain
    messages = [{"role": "user", "content": item["prompt"]}]
    try:
        for kind, text in chain(messages, temperature=0, extra_headers={"x-request-id": entry["id"]}):
            if kind == "broke":
                entry["breaks"].append([time.time(), len(entry["reasoning"]) + len(entry["answer"])])
                continue
            if len(entry["resumed"]) < len(entry["breaks"]):
                entry["resumed"].append(time.time())  # the first text after a break
            entry[kind] += text
        entry["done"] = True
    except Exception as error:  # the chain is lost
        entry.update(done=False, error=f"{type(error).__name__}: {error}"[:200])
    entry["correct"] = entry["done"] and tasks.answer_correct(item, entry["answer"])
    entry["ended"] = time.time()


def stream_chains(log, stop, resume, pause_s):
    """One stream of the load: a chain, a pause, the next question, until `stop` is set."""
    resumable_stream.client = resumable_stream.client.with_options(base_url=SERVE_URL)  # loopback, as every test
    resumable_stream.MODEL_ID = MODEL_ID
    items = questions()
    while not stop.is_set():
        entry = {"id": f"chain-{len(log)}", "sent": time.time(), "status": None, "done": False}
        log.append(entry)  # list.append is atomic: the load's threads share the log
        run_chain(entry, items[len(log) % len(items)], resume)
        time.sleep(pause_s)


def in_flight_outcomes(log, killed_at):
    """For each chain in flight at `killed_at`: did it finish, right, with the text of an uninterrupted run of the
    same question (greedy decoding: any finished chain of it that never broke), how long it stalled, and how much
    of it was sent again (characters; the small model's tokenizer is byte-level, so about one prompt token each)."""
    uninterrupted = {e["question"]: e["reasoning"] + e["answer"] for e in log if e["done"] and not e["breaks"]}
    outcomes = []
    for e in log:
        if not e["sent"] <= killed_at < e["ended"]:
            continue
        outcomes.append(
            {
                "id": e["id"],
                "client": e["client"],
                "finished": e["done"],
                "correct": e["correct"],
                "same_as_uninterrupted": e["reasoning"] + e["answer"] == uninterrupted.get(e["question"]),
                "breaks": len(e["breaks"]),
                "stall_s": [round(again - broke, 1) for (broke, _), again in zip(e["breaks"], e["resumed"])],
                "resent_chars": sum(sent for _, sent in e["breaks"][: len(e["resumed"])]),
                "error": e["error"],
            }
        )
    return outcomes


def outcome(results):
    """What the notebook says of `python -m benchmark.node_loss --client both`'s results, in numbers."""
    chains = results["in_flight_chains"]
    plain = [c for c in chains if c["client"] == "plain"]
    resuming = [c for c in chains if c["client"] == "resuming"]
    lost = [c for c in plain if not c["finished"]]
    broke = [c for c in resuming if c["breaks"]]
    stalls = sorted(s for c in broke for s in c["stall_s"])
    return (
        f"Of the {len(plain)} chains the plain client had in flight at the kill, {len(lost)} broke off and were lost "
        f"and {sum(c['correct'] for c in plain)} finished right. Of the resuming client's {len(resuming)}, "
        f"{len(broke)} broke and were sent again with the chain so far: {sum(c['finished'] for c in resuming)} "
        f"finished, {sum(c['correct'] for c in resuming)} with the right answer and "
        f"{sum(c['same_as_uninterrupted'] for c in resuming)} with the text of an uninterrupted run of the same "
        f"question. Those that broke stalled {', '.join(f'{s} s' for s in stalls) or 'not at all'}, and sending "
        f"them again cost {sum(c['resent_chars'] for c in broke)} characters of chain in the prompts."
    )
