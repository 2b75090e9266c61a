"""A tiny torch classifier that batches requests: on the CPU as written, on CUDA with `gpu="T4"` (or any GPU) added.

`@model(batch=...)` makes Ray Serve gather up to 16 concurrent requests (waiting at most
5 ms) into one call of `predict`, which receives a list per input and returns one output
per request. Callers see no difference: one request in, one prediction out.

Run it with `python examples/torch_batch.py` (needs `pip install "lambdaml[torch]"`).
"""

import concurrent.futures
import random

import lambdaml
from lambdaml import Input, model

FEATURES = 64
CLASSES = 10


def build_network(device: str):
    """The model's network; bench/bench_batching.py times it directly, without Ray."""
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, CLASSES),
    )
    return network.to(device).eval()


@model(name="torch-classifier", cpu=0.5, min=0, max=2, batch={"max_size": 16, "wait_ms": 5}, packages=["torch==2.13.0"])
class Classifier:
    def setup(self) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.network = build_network(self.device)

    def predict(
        self, features: list[list[float]] = Input(description=f"{FEATURES} numbers", min_length=FEATURES)
    ) -> list[dict]:
        import torch

        with torch.inference_mode():
            batch = torch.tensor(features, dtype=torch.float32, device=self.device)
            probabilities = torch.softmax(self.network(batch), dim=1)
            scores, labels = probabilities.max(dim=1)
        return [
            {"label": int(label), "score": round(float(score), 4), "batch_size": len(features), "device": self.device}
            for label, score in zip(labels, scores)
        ]


if __name__ == "__main__":
    deployment = Classifier.deploy()
    print(f"deployed {deployment.name} version {deployment.version} at {deployment.url}")
    inputs = [{"features": [random.random() for _ in range(FEATURES)]} for _ in range(32)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # concurrent requests fill batches
        results = list(pool.map(lambda i: lambdaml.run("torch-classifier", input=i), inputs))
    print("first result:", results[0])
    print("largest batch seen:", max(r["batch_size"] for r in results))
    print("Ray dashboard:", deployment.dashboard_url)
