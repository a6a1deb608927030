"""Stream one answer: print the model's reasoning as it arrives, then its answer.

Expects the tutorial's deployment at $BASE_URL (default http://localhost:8000/v1), serving $MODEL_ID."""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("BASE_URL", "http://localhost:8000/v1"),
    api_key=os.environ.get("API_KEY", "FAKE_KEY"),  # any placeholder, unless the server requires a key
)
MODEL_ID = os.environ.get("MODEL_ID", "my-qwq-32B")

stream = client.chat.completions.create(
    model=MODEL_ID,
    messages=[
        {
            "role": "user",
            "content": "I need to plan a trip to Paris from Seattle. Can you help me research flight costs, create an "
            "itinerary for 3 days, and suggest restaurants based on my dietary restrictions (vegetarian)?",
        }
    ],
    stream=True,
)

print("Reasoning:")
answering = False
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    reasoning = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None)
    if reasoning:
        print(reasoning, end="", flush=True)
    if delta.content:
        if not answering:
            print("\n\nAnswer:")
            answering = True
        print(delta.content, end="", flush=True)
print()
