"""The CLI's view of a model over time: ``lambdaml ui`` (the web pages) and the last hour's figures
that ``lambdaml status NAME`` prints, the same ones the model's monitoring panel draws
(``lambdaml.control.stats.model_series``, through ``observe.figures``)."""

from __future__ import annotations

import webbrowser
from typing import Optional
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from lambdaml import client, observe
from lambdaml.errors import NotDeployedError

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def print_figures(name: str) -> None:
    """The last hour of ``name`` from its records: predictions, errors, latency, cold starts, replicas."""
    totals = observe.figures(name, "1h")["totals"]
    if not totals["count"] and not totals["cold_starts"]:
        console.print("Last hour: no predictions.", highlight=False)
        return
    error_rate = "-" if totals["error_rate"] is None else f"{totals['error_rate']:.0%} ({totals['failed']} failed)"
    rows = [
        ("predictions", f"{totals['count']} ({totals['per_minute']:.2f} a minute)"),
        ("error rate", error_rate),
        ("predict time p50 / p95", f"{_seconds(totals['predict_time_p50'])} / {_seconds(totals['predict_time_p95'])}"),
        ("total time p50 / p95", f"{_seconds(totals['total_time_p50'])} / {_seconds(totals['total_time_p95'])}"),
        ("cold starts", f"{totals['cold_starts']} (replicas started)"),
        ("replicas now", str(totals["replicas_now"])),
        ("GPU memory peak", "-" if totals["gpu_peak"] is None else f"{totals['gpu_peak'] / 2**30:.2f} GiB"),
    ]
    table = Table("last hour", "from the records")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def ui(
    name: Optional[str] = typer.Argument(None, help="A model's name: open its playground (default: the overview)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL without opening a browser."),
) -> None:
    """Open the web pages: the cluster's models, or a model's playground, history and monitoring.

    Example: `lambdaml ui hello`
    """
    base = client.http_base_url()
    url = f"{base}/ui/" + (quote(name) if name else "")
    if name:
        answer = client.request("GET", f"{base}/ui/api/models/{quote(name)}", f"finding {name}")
        if answer.status_code == 404:
            raise NotDeployedError(f"No model named {name!r} is deployed at {base}; `lambdaml ls` lists the models.")
    console.print(url, highlight=False)
    if no_browser:
        return
    if webbrowser.open(url):
        errors.print("Opened in your browser.", highlight=False)
    else:
        errors.print("No browser could be opened here: open the URL above in one.", highlight=False)
