"""A model that can be fine-tuned: `@model(train=...)`.

`train`'s typed inputs are a training's; it returns the trained weights as a file. Each
training that succeeds makes a new version of the model, whose `setup(weights=...)` gets
a local copy of those weights (`lambdaml versions greeter` lists it; `lambdaml rollback
greeter` goes back). Here the "weights" are one word, so the example runs anywhere.

Run it with `python examples/tuned_greeter.py`, or from the shell:
`lambdaml deploy examples/tuned_greeter.py` then `lambdaml train greeter -i greeting=hey`.
"""

import pathlib
import tempfile
import time

import lambdaml
from lambdaml import Input, model


def train(greeting: str = Input(description="The word the new version greets with", max_length=40)) -> pathlib.Path:
    weights = pathlib.Path(tempfile.mkdtemp()) / "greeting.txt"
    weights.write_text(greeting)
    print(f"trained on {greeting!r}")
    return weights


@model(name="greeter", cpu=0.1, train=train)
class Greeter:
    def setup(self, weights: pathlib.Path | None = None) -> None:
        self.greeting = weights.read_text() if weights else "hello"  # None: a version no training made

    def predict(self, name: str = Input(description="Who to greet")) -> str:
        return f"{self.greeting}, {name}"


if __name__ == "__main__":
    deployment = Greeter.deploy()
    print(f"deployed {deployment.name} version {deployment.version}")
    print("before:", lambdaml.run("greeter", input={"name": "ada"}))
    training = lambdaml.trainings.create("greeter", {"greeting": "hey"})
    print("training:", training.status, training.output)
    trained, until = training.output["version"].split(":")[1], time.monotonic() + 120  # lambdaml/greeter:ID
    # The new version rolls out: its first replica takes over from the old one's.
    while (prediction := lambdaml.predictions.create("greeter", {"name": "ada"})).version != trained:
        assert time.monotonic() < until, "the trained version did not take over within 2 minutes"
        time.sleep(0.5)
    print("after:", prediction.output, "(version", prediction.version + ")")
