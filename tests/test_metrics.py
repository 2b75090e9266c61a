"""lambdaml_* metrics: exported on the node's Prometheus endpoint with the right counts, and documented."""

import json
import re
import time
from pathlib import Path

import httpx
import pytest

import lambdaml
from lambdaml import InputError, ModelError, model

DOCS = Path(__file__).parent.parent / "docs"
METRICS_SOURCE = Path(__file__).parent.parent / "lambdaml" / "serve" / "metrics.py"


def _prediction_counts(metrics: str, name: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("ray_lambdaml_predictions_total{") and f'model="{name}"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_prometheus_endpoint_counts_predictions_by_status(deployed, cluster):
    @model(name="metered", cpu=0.1, min=1)
    def metered(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    deployed(metered)
    for x in (1, 2, 3):
        lambdaml.run("metered", {"x": x})
    for bad, error in (({"x": -1}, ModelError), ({"x": "many"}, InputError)):
        with pytest.raises(error):
            lambdaml.run("metered", bad)
    expected = {"succeeded": 3.0, "failed": 1.0, "invalid": 1.0}
    deadline = time.monotonic() + 30
    while (counts := _prediction_counts(metrics := httpx.get(cluster.metrics_url).text, "metered")) != expected:
        assert time.monotonic() < deadline, counts
        time.sleep(1)
    assert "ray_lambdaml_predictions_in_flight{" in metrics
    # predict ran 4 times (the invalid input never reached it): the histogram says so, bucket by bucket
    deadline = time.monotonic() + 30
    while (histogram := _predict_histogram(metrics, "metered"))["count"] != 4:
        assert time.monotonic() < deadline, histogram
        time.sleep(1)
        metrics = httpx.get(cluster.metrics_url).text
    buckets = [histogram["buckets"][le] for le in sorted(histogram["buckets"], key=float)]
    assert buckets == sorted(buckets) and buckets[-1] == 4 and histogram["buckets"]["+Inf"] == 4, histogram
    assert 0 < histogram["sum"] < 60


def _predict_histogram(metrics: str, name: str) -> dict:
    """``ray_lambdaml_predict_seconds`` of one model: count, sum and the cumulative count per ``le``."""
    histogram: dict = {"count": 0.0, "sum": 0.0, "buckets": {}}
    for line in metrics.splitlines():
        if line.startswith("ray_lambdaml_predict_seconds_") and f'model="{name}"' in line:
            series, value = line.split("{", 1)[0].removeprefix("ray_lambdaml_predict_seconds_"), float(line.rsplit(" ", 1)[1])
            if series == "bucket":
                le = line.split('le="', 1)[1].split('"', 1)[0]
                histogram["buckets"][le] = histogram["buckets"].get(le, 0) + value
            elif series in ("count", "sum"):
                histogram[series] += value
    return histogram


def test_docs_and_grafana_name_only_metrics_that_exist():
    defined = {f"ray_{name}" for name in re.findall(r'"(lambdaml_[a-z_]+)"', METRICS_SOURCE.read_text())}
    named = re.findall(r"`(ray_lambdaml_[a-z_]+)`", (DOCS / "monitoring.md").read_text())
    documented = {name.removesuffix("_total") for name in named}  # Prometheus names counters *_total
    assert documented == defined
    queries = " ".join(t["expr"] for p in json.loads((DOCS / "grafana-lambdaml.json").read_text())["panels"] for t in p["targets"])
    used = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in re.findall(r"ray_lambdaml_[a-z_]+", queries)}
    assert used <= defined and used
