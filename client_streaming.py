# client_streaming.py
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

chunks = []  # ("reasoning" or "answer", text), in order of arrival
print("Reasoning:")
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    reasoning = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None)
    if reasoning:
        chunks.append(("reasoning", reasoning))
        print(reasoning, end="", flush=True)
    if delta.content:
        if not any(kind == "answer" for kind, _ in chunks):
            print("\n\nAnswer:")
        chunks.append(("answer", delta.content))
        print(delta.content, end="", flush=True)
print()
