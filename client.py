"""Ask the deployment one question; print the model's reasoning, then its answer.

Expects the tutorial's deployment at $BASE_URL (default http://localhost:8000/v1), serving $MODEL_ID (by
default the one model it lists)."""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("BASE_URL", "http://localhost:8000/v1"),
    api_key=os.environ.get("API_KEY", "FAKE_KEY"),  # any placeholder, unless the server requires a key
    # A reply that is not streamed arrives when the whole chain is done: wait as long as the deployment lets a chain
    # run (graceful_shutdown_timeout_s), not the client's default 600 s, after which it sends the request again.
    timeout=900,
)
MODEL_ID = os.environ.get("MODEL_ID") or client.models.list().data[0].id  # else the one it serves

response = client.chat.completions.create(
    model=MODEL_ID,
    messages=[{"role": "user", "content": "What is the sum of all even numbers between 1 and 100?"}],
)
message = response.choices[0].message
# vLLM returns the reasoning as `reasoning`; servers older than vLLM 0.16 called it `reasoning_content`.
reasoning = getattr(message, "reasoning", None) or getattr(message, "reasoning_content", None)

print(f"Reasoning:\n{(reasoning or '').strip()}\n")
print(f"Answer:\n{(message.content or '').strip()}")
