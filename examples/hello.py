"""The smallest lambdaml model: a function with two validated inputs.

Run it with `python examples/hello.py`: it deploys the model on the local
cluster (started in the background on first use), calls it three ways and
prints the results and the Ray dashboard's address.
"""

import lambdaml
from lambdaml import Input, model


@model(name="hello", min=0, max=2, cpu=0.25, scaledown_after=30)
def hello(
    name: str = Input(description="Who to greet", min_length=1),
    times: int = Input(default=1, ge=1, le=5, description="Repeat count"),
) -> str:
    return " ".join([f"hello {name}"] * times)


if __name__ == "__main__":
    print("local call:      ", hello(name="ada"))
    deployment = hello.deploy()
    print(f"deployed {deployment.name} version {deployment.version} at {deployment.url}")
    print(".remote():       ", hello.remote(name="ada", times=2))
    print("lambdaml.run():  ", lambdaml.run("hello", input={"name": "grace"}))
    print(f"try it:           curl -s -X POST {deployment.url}/predictions "
          "-H 'Content-Type: application/json' -d '{\"input\": {\"name\": \"ada\"}}'")
    print("Ray dashboard:   ", deployment.dashboard_url)
