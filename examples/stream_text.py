"""A streaming text generator: `predict` is a generator, so outputs stream as they are made.

Over HTTP, send `Accept: text/event-stream` to get Server-Sent Events (`output` per item,
then `done`); a plain request gets the whole text at once. `.remote()` returns an iterator.

Run it with `python examples/stream_text.py`.
"""

import time
from collections.abc import Iterator

from lambdaml import Input, model

WORDS = "the quick brown fox jumps over the lazy dog while the cat watches".split()


@model(name="stream-text", cpu=0.25, min=0, max=2)
def stream_text(
    prompt: str = Input(description="Where to start"),
    words: int = Input(default=5, ge=1, le=50, description="How many words to generate"),
    delay: float = Input(default=0.05, ge=0, le=1, description="Seconds between words"),
) -> Iterator[str]:
    yield prompt
    for index in range(words):
        time.sleep(delay)  # stands in for a model producing one token at a time
        yield " " + WORDS[(len(prompt) + index) % len(WORDS)]


if __name__ == "__main__":
    deployment = stream_text.deploy()
    print(f"deployed {deployment.name} version {deployment.version} at {deployment.url}")
    print("streamed: ", end="", flush=True)
    for piece in stream_text.remote(prompt="Once", words=8):
        print(piece, end="", flush=True)
    print()
    print(f"try it:   curl -N -X POST {deployment.url}/predictions -H 'Accept: text/event-stream' "
          "-H 'Content-Type: application/json' -d '{\"input\": {\"prompt\": \"Once\"}}'")
    print("Ray dashboard:", deployment.dashboard_url)
