"""stream_chain(): a chat completion streamed as reasoning, then answer; a stream that breaks (its replica or node
died, the connection was reset, a 5xx) is sent again with the chain so far, and any replica continues it.

Expects the tutorial's deployment at $BASE_URL (default http://localhost:8000/v1), serving $MODEL_ID (by
default the one model it lists)."""

import os
import time

import httpx
from openai import APIError, APIStatusError, OpenAI

client = OpenAI(
    base_url=os.environ.get("BASE_URL", "http://localhost:8000/v1"),
    api_key=os.environ.get("API_KEY", "FAKE_KEY"),  # any placeholder, unless the server requires a key
    max_retries=0,  # stream_chain() sends again itself: it knows what the reply had reached
)
MODEL_ID = os.environ.get("MODEL_ID")  # else the one model the deployment lists


def stream_chain(messages, resume_for_s=300, max_breaks=5, **options):
    """Yield ("reasoning", text) and ("answer", text) as they arrive, and ("broke", why) when the stream breaks; then
    send the request again with the chain so far, for up to `resume_for_s` seconds (a replica that replaces a dead
    one may take minutes to start), and for at most `max_breaks` breaks."""
    reasoning, answer, broke_at, wait_s, breaks = "", "", None, 1, 0
    while True:
        # The chain so far as the assistant's message to continue. The chat template opens the reasoning with
        # <think>, so the message does too. The answer is written again after the reasoning (the same one, with
        # greedy decoding), and the part already shown is skipped.
        chain = [{"role": "assistant", "content": "<think>\n" + reasoning}] if reasoning else []
        resume = {"continue_final_message": True, "add_generation_prompt": False} if reasoning else {}
        answer_again = ""
        try:
            model = MODEL_ID or client.models.list().data[0].id
            stream = client.chat.completions.create(
                model=model, messages=messages + chain, stream=True, extra_body=resume, **options
            )
            for chunk in stream:
                broke_at, wait_s = None, 1  # a replica answers
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                # vLLM returns the reasoning as `reasoning`; servers older than vLLM 0.16 called it `reasoning_content`.
                text = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None)
                if text and not answer:
                    reasoning += text
                    yield "reasoning", text
                if delta.content:
                    answer_again += delta.content
                    if len(answer_again) > len(answer):  # past what was shown before the break
                        yield "answer", answer_again[len(answer) :]
                        answer = answer_again
                if chunk.choices[0].finish_reason:
                    return
            why = "it ended before the reply did"
        except APIStatusError as error:  # the reply's status, before any chunk
            if error.status_code < 500:
                raise  # refused on purpose (a bad request, a wrong key): sending it again would not help
            why = f"HTTP {error.status_code}"
        except (APIError, httpx.HTTPError) as error:  # no connection, or it broke, or an error instead of a chunk
            why = type(error).__name__
        if broke_at is None:
            broke_at, breaks = time.time(), breaks + 1
            if breaks > max_breaks:
                raise RuntimeError(f"the stream broke {breaks} times ({why} the last time)")
            yield "broke", f"{why}; sending it again with the {len(reasoning) + len(answer)} characters received"
        elif time.time() - broke_at > resume_for_s:
            raise RuntimeError(f"the stream broke ({why}) and no replica continued it within {resume_for_s}s")
        time.sleep(wait_s)
        wait_s = min(2 * wait_s, 30)
