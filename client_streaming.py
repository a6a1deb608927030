"""Stream one answer: print the model's reasoning as it arrives, then its answer. If the stream breaks, it goes on
where it broke (resumable_stream.py). The question: the command line's words, else the tutorial's.

Expects the tutorial's deployment at $BASE_URL (default http://localhost:8000/v1), serving $MODEL_ID (by
default the one model it lists)."""

import sys

from resumable_stream import stream_chain

question = " ".join(sys.argv[1:]) or (
    "I need to plan a trip to Paris from Seattle. Can you help me research flight costs, create an "
    "itinerary for 3 days, and suggest restaurants based on my dietary restrictions (vegetarian)?"
)
print("Reasoning:")
answering = False
for kind, text in stream_chain([{"role": "user", "content": question}]):
    if kind == "broke":
        print(f"\n[the stream broke: {text}]", flush=True)
        continue
    if kind == "answer" and not answering:
        print("\n\nAnswer:")
        answering = True
    print(text, end="", flush=True)
print()
