"""A class-form model: `setup()` runs once per replica, `predict()` per request.

Run it with `python examples/echo_class.py`.
"""

import time

import lambdaml
from lambdaml import Input, model


@model(name="echo", min=1, max=2, cpu=0.25, scaledown_after=30)
class Echo:
    def setup(self) -> None:
        # Stands in for loading weights: done once, before the first request.
        self.loaded_at = time.time()
        self.prefix = "echo"
        print("setup done")

    def predict(
        self,
        text: str = Input(description="Text to send back", max_length=1000),
        upper: bool = Input(default=False, description="Return it in capitals"),
    ) -> dict:
        print(f"echoing {len(text)} characters")
        reply = text.upper() if upper else text
        return {"reply": f"{self.prefix}: {reply}", "replica_started_at": self.loaded_at}

    def teardown(self) -> None:
        print("replica shutting down")


if __name__ == "__main__":
    deployment = Echo.deploy()
    print(f"deployed {deployment.name} version {deployment.version} at {deployment.url}")
    print(".remote():     ", Echo.remote(text="hi there", upper=True))
    prediction = lambdaml.create_prediction("echo", {"text": "over HTTP"})
    print("HTTP status:   ", prediction["status"], prediction["output"])
    print("model logs:    ", prediction["logs"].strip())
    print("Ray dashboard: ", deployment.dashboard_url)
