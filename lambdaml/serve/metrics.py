"""The observe stage, inside replicas: ``lambdaml_*`` metrics through Ray Serve's metrics API.

Ray exports them with the node's other metrics on its Prometheus endpoint (Ray
adds a ``ray_`` prefix and, for Serve replicas, the ``application``,
``deployment`` and ``replica`` tags); docs/monitoring.md lists the names and
example queries. ``NoMetrics`` stands in where there is no Ray, as in unit
tests of ``ModelRuntime``.
"""

from __future__ import annotations

import bisect
import collections
import sys
import threading
import time
from typing import Any

_NO_FIGURES: dict[str, float] = {}  # shared, never changed
LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


class NoMetrics:
    """Records nothing."""

    def started(self) -> None:
        pass

    def stopped(self) -> None:
        pass

    def finished(self, status: str, figures: dict[str, float] = _NO_FIGURES) -> None:
        pass


class ModelMetrics(NoMetrics):
    """The metrics of one model's replica.

    A prediction only appends its figures to a list; a background thread hands
    them to Ray once a second (Ray reports to Prometheus every few seconds
    anyway). Recording through Ray's metric objects costs ~20-50 us per
    prediction, which would otherwise sit on every request's path.
    """

    def __init__(self, model: str, version: str = "", price_per_hour: float | None = None, flush_every_s: float = 1.0):
        from ray.serve.metrics import Counter, Gauge

        self._in_flight = 0
        self._pending: list[tuple[str, dict[str, float]]] = []
        self.predictions = Counter(
            "lambdaml_predictions", "Predictions by outcome: succeeded, failed or invalid", tag_keys=("model", "version", "status")
        )
        self.predict_seconds = CumulativeHistogram("lambdaml_predict_seconds", "Time in the model's predict")
        self.fetch_seconds = CumulativeHistogram("lambdaml_fetch_seconds", "Time fetching a prediction's input files")
        self.in_flight = Gauge("lambdaml_predictions_in_flight", "Predictions running now", tag_keys=("model", "version"))
        self.file_bytes = Counter(
            "lambdaml_file_bytes", "Bytes of input files fetched (in) and output files delivered (out)",
            tag_keys=("model", "version", "direction"),
        )
        self.gpu_peak = Gauge(
            "lambdaml_gpu_peak_memory_bytes", "Peak CUDA memory allocated during the last prediction", tag_keys=("model", "version")
        )
        self.dollars = Gauge(
            "lambdaml_replica_dollars_per_hour", "This replica's share of its node's hourly price (lambdaml.cost)",
            tag_keys=("model", "version"),
        )
        for metric in (self.predictions, self.in_flight, self.file_bytes, self.gpu_peak, self.dollars,
                       *self.predict_seconds.gauges, *self.fetch_seconds.gauges):
            metric.set_default_tags({"model": model, "version": version})  # a canary's figures apart from the live one's
        if price_per_hour is not None:  # summed over replicas, it is what the model costs an hour now
            self.dollars.set(price_per_hour)
        threading.Thread(target=self._flush_forever, args=(flush_every_s,), name="lambdaml-metrics", daemon=True).start()

    def started(self) -> None:
        """A predict starts running (it has its slot); ``stopped`` always follows."""
        self._in_flight += 1

    def stopped(self) -> None:
        self._in_flight -= 1

    def finished(self, status: str, figures: dict[str, float] = _NO_FIGURES) -> None:
        """One prediction ended, whether it ran or not. ``figures`` (kept, not copied): predict_time,
        fetch_time, bytes_in, bytes_out, gpu_peak."""
        self._pending.append((status, figures))

    def _flush_forever(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self.flush()

    def flush(self) -> None:
        """Hand what was recorded since the last flush to Ray."""
        done, self._pending = self._pending, []
        for status, count in collections.Counter(status for status, _ in done).items():
            self.predictions.inc(count, tags={"status": status})
        self.predict_seconds.observe([figures["predict_time"] for _, figures in done if "predict_time" in figures])
        self.fetch_seconds.observe([figures["fetch_time"] for _, figures in done if "fetch_time" in figures])
        peaks = [figures["gpu_peak"] for _, figures in done if "gpu_peak" in figures]
        if peaks:
            self.gpu_peak.set(peaks[-1])
        for direction in ("in", "out"):
            total = sum(figures.get(f"bytes_{direction}", 0.0) for _, figures in done)
            if total:
                self.file_bytes.inc(total, tags={"direction": direction})
        self.in_flight.set(self._in_flight)


class CumulativeHistogram:
    """A Prometheus histogram (``{name}_bucket`` by ``le``, ``{name}_sum``, ``{name}_count``) made of
    gauges that hold this replica's running totals, set once per flush whatever the load.

    Hand-written because Ray's ``Histogram`` takes one ``observe`` call per value: at ~1,000
    predictions a second that was ~0.03 ms of replica CPU and ~0.007 ms of the dashboard agent's
    per prediction (bench/bench_cpu_split.py, 2026-12-06), about 3% of a trivial model's
    throughput. The exported series have the names and meaning of a histogram's, so
    ``histogram_quantile`` and ``rate`` read them as before (a replica's restart is a counter reset).
    """

    def __init__(self, name: str, description: str, boundaries: list[float] = LATENCY_BOUNDARIES):
        from ray.serve.metrics import Gauge

        self._boundaries = boundaries
        self._labels = [repr(float(bound)) for bound in boundaries] + ["+Inf"]
        self._buckets = [0] * (len(boundaries) + 1)  # observations per bucket, not cumulative
        self._sum = 0.0
        self.bucket = Gauge(f"{name}_bucket", f"{description}: observations <= le", tag_keys=("model", "version", "le"))
        self.sum = Gauge(f"{name}_sum", f"{description}: sum of the observations", tag_keys=("model", "version"))
        self.count = Gauge(f"{name}_count", f"{description}: number of observations", tag_keys=("model", "version"))
        self.gauges = (self.bucket, self.sum, self.count)

    def observe(self, values: list[float]) -> None:
        """Add ``values`` and set the gauges (nothing without values: the totals did not change)."""
        if not values:
            return
        for value in values:
            self._buckets[bisect.bisect_left(self._boundaries, value)] += 1
        self._sum += sum(values)
        running = 0
        for label, count in zip(self._labels, self._buckets):
            running += count
            self.bucket.set(running, tags={"le": label})
        self.sum.set(self._sum)
        self.count.set(running)


class GpuMemory:
    """Peak CUDA memory of one prediction, when the model uses torch with CUDA (``found``)."""

    def __init__(self, cuda: Any):
        self._cuda = cuda

    @classmethod
    def found(cls) -> GpuMemory | None:
        """One for this process's CUDA, or None (no torch, or no GPU): nothing to do per prediction."""
        torch: Any = sys.modules.get("torch")
        return cls(torch.cuda) if torch is not None and torch.cuda.is_available() else None

    def reset(self) -> None:
        self._cuda.reset_peak_memory_stats()

    def peak(self) -> float:
        return float(self._cuda.max_memory_allocated())
