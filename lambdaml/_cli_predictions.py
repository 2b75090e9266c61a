"""How the CLI shows predictions: status lines, followed logs, outputs, the table of records.

Kept apart from ``lambdaml.cli`` (the command definitions) like ``_cli_io``; the
work itself is ``lambdaml.predictions``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lambdaml import predictions
from lambdaml.errors import LambdamlError, WaitTimeoutError
from lambdaml.schema import Prediction

HOLD_S = 5  # `lambdaml predict` lets the server hold the request this long, then polls, showing the status
CANCEL_WAIT_S = 30.0  # `lambdaml predictions cancel` waits this long to see the prediction stop


def _for(stamp: str | None) -> str:
    if not stamp:
        return ""
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
    return f" for {max(0.0, seconds):.0f} s"


def describe(prediction: Prediction) -> str:
    """What the prediction is doing, or waiting for, in words."""
    if prediction.status == "starting":
        model = f" of {prediction.model}" if prediction.model else ""
        return f"{prediction.id} is starting{_for(prediction.created_at)}: queued, or waiting for a replica{model}"
    if prediction.status == "processing":
        return f"{prediction.id} is processing{_for(prediction.started_at)}"
    return f"{prediction.id} {prediction.status}"


def run_to_end(name: str, values: dict[str, Any], status: Console, start: Callable[..., Prediction] = predictions.create,
               what: str = "prediction") -> Prediction:
    """Run a prediction (or, with ``trainings.create``, a training) until it ends, with a status line that
    says what it waits for; Ctrl-C cancels it."""
    prediction = None
    try:
        with status.status(f"[bold]{name}[/]: sent, waiting for the {what}") as line:
            prediction = start(name, values, wait=HOLD_S)
            for _ in predictions.watch(prediction):
                line.update(f"[bold]{name}[/]: {describe(prediction)}")
    except KeyboardInterrupt:
        # Within the hold, hanging up cancels it; after, we must ask.
        if prediction is not None and prediction.status not in predictions.FINAL:
            prediction.cancel()
        raise LambdamlError(f"Interrupted, so the {what} was canceled.") from None
    return prediction


def follow(prediction: Prediction, status: Console) -> None:
    """Print the prediction's new log text as it arrives (stdout) and each status it reaches (``status``)."""
    shown_status, shown_logs, line_open = "", "", False
    for _ in predictions.watch(prediction):
        logs = prediction.logs or ""
        if len(logs) > len(shown_logs) and logs.startswith(shown_logs):
            typer.echo(logs[len(shown_logs):], nl=False)
            shown_logs, line_open = logs, not logs.endswith("\n")
        if prediction.status != shown_status:
            if line_open:  # a status line never continues a partial log line
                typer.echo()
                line_open = False
            status.print(describe(prediction), highlight=False, markup=False)
            shown_status = prediction.status
    if line_open:
        typer.echo()


def report(prediction: Prediction, console: Console, errors: Console, as_json: bool, logs_shown: bool) -> None:
    """A finished prediction: its output; or its logs and error, and exit status 1, if it did not succeed."""
    if as_json:
        console.print_json(data=prediction.model_dump())
    elif prediction.status == "succeeded":
        output = prediction.output
        console.print(output if isinstance(output, str) else json.dumps(output, indent=2), highlight=False, markup=False)
    else:
        if prediction.logs and not logs_shown:
            errors.print(prediction.logs.rstrip(), highlight=False, markup=False)
        raise LambdamlError(prediction.error if prediction.status == "canceled" else f"the prediction failed: {prediction.error}")
    if prediction.status != "succeeded":
        raise typer.Exit(1)


def cancel(prediction_id: str, errors: Console) -> str:
    """Cancel a prediction and wait a while for it to stop; what happened, in a sentence."""
    prediction = predictions.cancel(prediction_id)
    if prediction.status in predictions.FINAL:
        return f"{prediction_id} had already ended ({prediction.status}); nothing to cancel."
    with errors.status(f"{prediction_id}: canceling"):
        try:
            prediction.wait(CANCEL_WAIT_S)
        except WaitTimeoutError:
            return f"Cancel requested; {prediction_id} is still {prediction.status} after {CANCEL_WAIT_S:g} s."
    if prediction.status == "canceled":
        return f"Canceled {prediction_id}."
    return f"{prediction_id} {prediction.status} before the cancel took effect."


def table(items: Iterable[Prediction]) -> Table:
    """Predictions as rows: id, model, status, when created (UTC), predict time."""
    colors = {"succeeded": "green", "failed": "red", "canceled": "yellow"}
    rows = Table("id", "model", "status", "created (UTC)", "predict time")
    for prediction in items:
        predict_time = prediction.metrics.get("predict_time")
        rows.add_row(
            prediction.id,
            prediction.model or "-",
            f"[{colors.get(prediction.status, 'default')}]{prediction.status}[/]",
            (prediction.created_at or "-")[:19].replace("T", " "),
            "-" if predict_time is None else f"{predict_time:.2f} s",
        )
    return rows
