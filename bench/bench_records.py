"""Records benchmark: records written per second through ``Records.sync``, SQLite and PostgreSQL.

Each simulated replica (a thread) sends batches of 100 updates as fast as the
database takes them, as a replica does every ~100 ms: 50 new records
("starting", the whole record) and the 50 of its previous batch finishing
("succeeded": output, logs, timestamps, metrics), with the new ones as its
running list. One record written = both of its updates. Measured without
webhooks and with a webhook on every record (two outbox rows per record), as
records per second of wall time and per CPU second (the benchmark's process
plus the PostgreSQL server's), which a machine busy with other work changes less.
Every run uses a new database: a SQLite file in a temporary folder, or a new
database on a PostgreSQL server started by ``tests/postgres.py`` (default
settings: fsync on; SQLite runs in WAL mode with ``synchronous=NORMAL``).

Usage: ``python bench/bench_records.py [--runs 5] [--records 5000] [--ids time|random]`` (records
per replica). Prints a Markdown table and writes ``bench/results/records.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _child import save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/postgres.py

import psycopg  # noqa: E402

from lambdaml import _clock  # noqa: E402
from lambdaml._ids import new_id  # noqa: E402
from lambdaml.control.records import Records  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402

BATCH = 100
_databases = itertools.count()


def starting(prediction_id: str, replica: str, webhook: str | None) -> dict:
    return {
        "id": prediction_id, "model": "hello", "version": "3f9a0c", "status": "starting",
        "input": {"prompt": "a photo of an astronaut riding a horse", "steps": 30}, "output": None, "logs": "",
        "error": None, "created_at": _clock.now(), "started_at": None, "completed_at": None, "metrics": {},
        "urls": {"get": f"http://127.0.0.1:8000/v1/predictions/{prediction_id}",
                 "cancel": f"http://127.0.0.1:8000/v1/predictions/{prediction_id}/cancel"},
        "deadline": None, "data_removed": False, "webhook": webhook, "webhook_events_filter": None,
        "_replica": replica, "_input_hash": "9b74c9897bac770ffc029102a200c5de", "_events": ["start"] if webhook else [],
    }


def succeeded(prediction_id: str, webhook: str | None) -> dict:
    return {
        "id": prediction_id, "status": "succeeded", "output": ["https://example.com/out/0.png"],
        "logs": "step 1/30\nstep 30/30\n", "started_at": _clock.now(), "completed_at": _clock.now(),
        "metrics": {"predict_time": 0.012, "total_time": 0.015}, "_events": ["completed"] if webhook else [],
    }


ID_KINDS = {"time": new_id, "random": lambda: secrets.token_hex(16)}  # replicas' ids; before stop 27, random


def replica(records: Records, name: str, count: int, webhook: str | None, make_id=new_id) -> str:
    """Send ``count`` records through ``sync``, each starting in one batch and succeeded in the next; the last id."""
    half = BATCH // 2
    previous: list[str] = []
    for first in range(0, count + half, half):
        new = [make_id() for _ in range(first, min(first + half, count))]
        updates = [succeeded(i, webhook) for i in previous] + [starting(i, name, webhook) for i in new]
        records.sync(name, updates, new)
        previous = new or previous
    return previous[-1]


def server_cpu_s(postmaster: int | None) -> float:
    """CPU seconds used so far by the PostgreSQL server's live processes (0 for SQLite: it runs in ours)."""
    if postmaster is None:
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(stat.parent.name) == postmaster or int(fields[1]) == postmaster:  # fields[1]: its parent
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def one_run(
    url: str, replicas: int, count: int, webhook: str | None, postmaster: int | None, make_id=new_id
) -> tuple[float, float]:
    """Records per second of wall time, and per CPU second (this process and the server), all replicas together.

    The second stays meaningful on a shared machine, where other work takes the cores away.
    """
    records = Records(url)
    last: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: last.append(replica(records, f"r{n}", count, webhook, make_id)))
        for n in range(replicas)
    ]
    started, cpu_started = time.perf_counter(), time.process_time() + server_cpu_s(postmaster)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() + server_cpu_s(postmaster) - cpu_started
    assert all(records.get(prediction_id)["status"] == "succeeded" for prediction_id in last)
    records.close()  # after the CPU reading: the server's backends for these connections end here
    return replicas * count / elapsed, replicas * count / cpu


def fresh_database(backend: str, folder: Path, server: str) -> str:
    number = next(_databases)
    if backend == "sqlite":
        return f"sqlite:///{folder}/records-{number}.db"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE bench_{number}")
    return f"{server.rsplit('/', 1)[0]}/bench_{number}"


def measure(runs: int, count: int, make_id=new_id) -> list[dict]:
    """Each configuration's rates; the runs go round the configurations, so a drifting machine hits them all alike."""
    configurations = list(itertools.product(("sqlite", "postgresql"), (1, 4), (False, True)))
    rates: dict[tuple, list[tuple[float, float]]] = {configuration: [] for configuration in configurations}
    with tempfile.TemporaryDirectory(prefix="lmbench-records-") as folder:
        server_folder = tempfile.TemporaryDirectory(prefix="lmbench-pg-")  # not in folder: the server runs as nobody
        with server_folder, postgres_server(Path(server_folder.name)) as server:
            postmaster = int((Path(server_folder.name) / "data" / "postmaster.pid").read_text().split()[0])
            for run in range(runs):
                for backend, replicas, webhooks in configurations:
                    url = fresh_database(backend, Path(folder), server)
                    webhook = "https://example.com/hook" if webhooks else None
                    server_pid = postmaster if backend == "postgresql" else None
                    rates[backend, replicas, webhooks].append(one_run(url, replicas, count, webhook, server_pid, make_id))
                print(f"  run {run + 1}/{runs} done", flush=True)
    return [
        {
            "backend": backend,
            "replicas": replicas,
            "webhooks": webhooks,
            "records_per_s": [wall for wall, _ in rates[backend, replicas, webhooks]],
            "records_per_cpu_s": [cpu for _, cpu in rates[backend, replicas, webhooks]],
        }
        for backend, replicas, webhooks in configurations
    ]


def report(results: list[dict]) -> str:
    lines = [
        "| database | replicas (threads) | webhooks | records/s, median (min - max) | records per CPU second, median |",
        "|---|---:|---|---:|---:|",
    ]
    for result in results:
        rates = result["records_per_s"]
        lines.append(
            f"| {result['backend']} | {result['replicas']} | {'yes' if result['webhooks'] else 'no'} "
            f"| {statistics.median(rates):,.0f} ({min(rates):,.0f} - {max(rates):,.0f}) "
            f"| {statistics.median(result['records_per_cpu_s']):,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=5000, help="records per replica and run")
    parser.add_argument("--ids", choices=sorted(ID_KINDS), default="time",
                        help="lambdaml's ids (time first), or fully random ones as before stop 27")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = measure(args.runs, args.records, ID_KINDS[args.ids])
    loads = {"load_average_before": load_before, "load_average_after": os.getloadavg()}  # a busy machine shows here
    save("records", {"batch": BATCH, "records_per_replica": args.records, "ids": args.ids, **loads, "results": results})
    print(f"Load average (1, 5, 15 min): before {load_before}, after {loads['load_average_after']}\n")
    print(report(results))


if __name__ == "__main__":
    main()
