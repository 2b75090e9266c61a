"""The ``lambdaml`` command: a thin typer + rich shell over lambdaml's Python API.

Every command calls the same public functions a notebook would; this module
only parses arguments and prints. Errors are one or two lines and a non-zero
exit status (a traceback only with ``--debug``).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from lambdaml import _cli_deploy, _cli_io, _cli_observe, _cli_predictions, client, cluster, observe, predictions, tokens, trainings
from lambdaml._settings import TRAINER_SUFFIX, cluster_settings
from lambdaml.cluster.head import auth_token_path
from lambdaml.cluster.node_types import Simulation, publish, read_cluster_yaml
from lambdaml.errors import ClusterError, InputError, LambdamlError

class _UntypedFlags:
    """typer 0.29 labels every flag ``<bool>`` in ``--help``; a flag takes no value, so it gets no label."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_UntypedFlags, typer.core.TyperCommand):
    pass


class _Group(_UntypedFlags, typer.core.TyperGroup):
    pass


app = typer.Typer(
    help="Serve ML models on Ray: deploy a @model file, call it, watch it.",
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, whatever the terminal width
_state = {"debug": False}


def _fail(message: str, hint: str = "") -> None:
    errors.print(f"[bold red]Error:[/] {message}", highlight=False)
    if hint:
        errors.print(hint, highlight=False)
    raise typer.Exit(1)


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with its lambdaml errors turned into a clear message and exit status 1."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (LambdamlError, FileNotFoundError, ValueError) as exc:
            if _state["debug"]:
                raise
            if isinstance(exc, InputError) and exc.invalid_fields:
                lines = "\n".join(f"  {f['field']}: {f['message']}" for f in exc.invalid_fields)
                _fail("the input is not valid:", lines)
            _fail(str(exc))

    return run


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register a top-level command (see ``_guarded``)."""
    return app.command(cls=_Command)(_guarded(function))


predictions_app = typer.Typer(help="Recorded predictions: list, show, follow, cancel.", cls=_Group, no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook deliveries: the signing secret.", cls=_Group, no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
app.add_typer(webhooks_app, name="webhooks")
tokens_app = typer.Typer(help="API tokens: create, list, revoke.", cls=_Group, no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to use (default: the local one)."),
) -> None:
    _state["debug"] = debug
    if address:
        os.environ["LAMBDAML_ADDRESS"] = address


def _http_base() -> str:
    """The predictions API's base URL; a clear error if no cluster is there to answer."""
    if os.environ.get("LAMBDAML_URL"):
        return os.environ["LAMBDAML_URL"].rstrip("/")
    info = cluster.current()
    if info is None and not os.environ.get("LAMBDAML_ADDRESS"):
        raise ClusterError(
            "No lambdaml cluster is running on this machine. Start one with `lambdaml up` or `lambdaml deploy FILE`."
        )
    return info.http_url if info else cluster.connect().http_url


def _openapi(name: str) -> dict[str, Any]:
    base = _http_base()
    # Asked of a replica: at zero replicas, one starts first (packages, setup()); say so while it does.
    with errors.status(f"[bold]{name}[/]: reading its inputs (a replica may be starting: installing packages, running setup())"):
        return client.openapi_document(name, base)


# ------------------------------------------------------------------ deploy and call

command(_cli_deploy.deploy)
command(_cli_deploy.check)


@command
def predict(
    name: str = typer.Argument(..., help="The model's name."),
    inputs: list[str] = typer.Option([], "-i", "--input", help="An input as key=value, or key=@file to send a file."),
    output_dir: pathlib.Path = typer.Option(pathlib.Path("."), "-o", "--output-dir", help="Where output files go."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole prediction as JSON."),
    run_async: bool = typer.Option(False, "--async", help="Start it and print its id and URL, without waiting."),
) -> None:
    """Run one prediction, like `cog predict`, and wait for it to end (Ctrl-C cancels it).

    Example: `lambdaml predict grayscale -i image=@photo.png -i contrast=1.5 -o out/` or
    `lambdaml predict slow -i n=3 --async`
    """
    document = _openapi(name)
    schemas = document["components"]["schemas"]
    values = _cli_io.parse_inputs(inputs, schemas["Input"])
    if run_async:
        prediction = predictions.create(name, values, wait=False)
        if as_json:
            console.print_json(data=prediction.model_dump())
            return
        typer.echo(f"{prediction.id}\n{prediction.urls.get('get', '')}")
        errors.print(f"Follow it with `lambdaml predictions show {prediction.id} --follow`", highlight=False)
        return
    prediction = _cli_predictions.run_to_end(name, values, errors)
    output_schema = json.dumps(schemas.get("Output", {}))
    # a file output: lambdaml's marker, or Cog's (a Cog model's output schema is Cog's own)
    if prediction.status == "succeeded" and ("x-lambdaml-file" in output_schema or '"format": "uri"' in output_schema):
        prediction.output, saved = _cli_io.save_output_files(prediction.output, output_dir)
        for path in saved:
            errors.print(f"Written {path}", highlight=False)
    _cli_predictions.report(prediction, console, errors, as_json, logs_shown=False)


@command
def train(
    name: str = typer.Argument(..., help="The model's name (deployed with @model(train=...) or cog.yaml's train)."),
    inputs: list[str] = typer.Option([], "-i", "--input", help="An input as key=value, or key=@file to send a file."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole training as JSON."),
    run_async: bool = typer.Option(False, "--async", help="Start it and print its id and URL, without waiting."),
) -> None:
    """Run the model's training function and wait for it (Ctrl-C cancels it). When it succeeds, the
    model runs a new version whose setup(weights=...) gets the trained weights; `lambdaml versions NAME` lists it.

    Example: `lambdaml train tuned -i greeting=hello`
    """
    values = _cli_io.parse_inputs(inputs, _openapi(name + TRAINER_SUFFIX)["components"]["schemas"]["Input"])
    if run_async:
        training = trainings.create(name, values, wait=False)
        typer.echo(f"{training.id}\n{training.urls.get('get', '')}")
        return
    training = _cli_predictions.run_to_end(name, values, errors, start=trainings.create, what="training")
    if training.status == "succeeded" and not as_json:
        errors.print(f"{name} now runs version {training.output['version'].partition(':')[2]}, with the weights at "
                     f"{training.output['weights']}", highlight=False)
        return
    _cli_predictions.report(training, console, errors, as_json, logs_shown=False)


@predictions_app.command("ls", cls=_Command)
@_guarded
def predictions_ls(
    name: Optional[str] = typer.Argument(None, help="Only this model's predictions."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many to show, newest first."),
    token: Optional[str] = typer.Option(None, "--token", help="Only those created with this token (its id, from `tokens ls`)."),
) -> None:
    """List recorded predictions, newest first: id, model, status, created, predict time.

    Example: `lambdaml predictions ls` or `lambdaml predictions ls hello -n 50 --token 3f9a0c1b2d4e`
    """
    _http_base()
    rows = list(itertools.islice(predictions.list(name, token), limit))
    console.print(_cli_predictions.table(rows) if rows else "No predictions recorded yet.")


@predictions_app.command("show", cls=_Command)
@_guarded
def predictions_show(
    prediction_id: str = typer.Argument(..., metavar="ID", help="The prediction's id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Print status and new logs until it ends, then the output."),
) -> None:
    """Print a prediction's record as JSON; with --follow, watch it until it ends.

    Example: `lambdaml predictions show 3f2a9c81d0e4 --follow`
    """
    _http_base()
    prediction = predictions.get(prediction_id)
    if not follow:
        console.print_json(data=prediction.model_dump())
        return
    _cli_predictions.follow(prediction, errors)
    _cli_predictions.report(prediction, console, errors, as_json=False, logs_shown=True)


@predictions_app.command("cancel", cls=_Command)
@_guarded
def predictions_cancel(prediction_id: str = typer.Argument(..., metavar="ID", help="The prediction's id.")) -> None:
    """Cancel a prediction (a queued one never runs) and wait for it to stop.

    Example: `lambdaml predictions cancel 3f2a9c81d0e4`
    """
    _http_base()
    console.print(_cli_predictions.cancel(prediction_id, errors), highlight=False)


@webhooks_app.command("secret", cls=_Command)
@_guarded
def webhooks_secret() -> None:
    """Print the key webhook deliveries are signed with (Standard Webhooks).

    Example: `lambdaml webhooks secret`
    """
    _http_base()
    typer.echo(predictions.webhook_secret())


@tokens_app.command("create", cls=_Command)
@_guarded
def tokens_create(
    name: str = typer.Option("", "--name", help="What the token is for, shown by `tokens ls`."),
    role: str = typer.Option("predict", "--role", help="predict (run models, see its own predictions) or admin (everything)."),
) -> None:
    """Make an API token and print it (once: only its hash is kept). From then on the API needs a token.

    Example: `lambdaml tokens create --name ci --role predict`
    """
    row, token = tokens.create(name, role)
    typer.echo(token)
    errors.print(
        f"Token {row['id']} ({row['role']}) made. It is shown only now: keep it. Send it as "
        "`Authorization: Bearer <token>`, or set LAMBDAML_API_TOKEN for the CLI and the Python client.",
        highlight=False,
    )


@tokens_app.command("ls", cls=_Command)
@_guarded
def tokens_ls() -> None:
    """List the cluster's API tokens: id, name, role, created, last used, revoked (never the tokens).

    Example: `lambdaml tokens ls`
    """
    rows = tokens.list()
    if not rows:
        console.print("No tokens: the API is open to anyone who can reach it. `lambdaml tokens create` makes one.")
        return
    table = Table("id", "name", "role", "created", "last used", "revoked")
    for row in rows:
        table.add_row(row["id"], row["name"] or "-", row["role"], row["created_at"][:19],
                      (row["last_used_at"] or "-")[:19], (row["revoked_at"] or "-")[:19])
    console.print(table)


@tokens_app.command("revoke", cls=_Command)
@_guarded
def tokens_revoke(
    token_id: str = typer.Argument(..., metavar="ID", help="The token's id, from `lambdaml tokens ls`."),
    open_api: bool = typer.Option(False, "--open-api", help="Revoke it even if it is the last one, opening the API."),
) -> None:
    """Revoke an API token: requests with it are refused within a second.

    Example: `lambdaml tokens revoke 3f9a0c1b2d4e`
    """
    row = tokens.revoke(token_id, open_api)
    console.print(f"Token {row['id']} revoked at {row['revoked_at'][:19]}.", highlight=False)


# ------------------------------------------------------------------ look


@command
def ls() -> None:
    """List deployed models: version, status, replicas (running/target) and URL.

    Example: `lambdaml ls`
    """
    models = observe.list_models()
    if not models:
        console.print("No models deployed. Deploy one with `lambdaml deploy FILE.py`.")
        return
    table = Table("name", "version", "status", "replicas", "URL")
    for model in models:
        table.add_row(model.name, model.version or "-", model.status, f"{model.running}/{model.target}", model.url)
    console.print(table)


@command
def status(name: str = typer.Argument(..., help="The model's name.")) -> None:
    """Show a model's replicas, why any are pending, and recent errors.

    Example: `lambdaml status hello`
    """
    report = observe.status(name)
    model = report["model"]
    console.print(f"[bold]{model.name}[/] {model.version or ''} {model.status} at {model.url}", highlight=False)
    table = Table("replica", "state", "node", "pid")
    for replica in model.replicas:
        table.add_row(replica.id, replica.state, replica.node_ip or "-", str(replica.pid or "-"))
    console.print(table if model.replicas else "No replicas (scaled to zero; the next request starts one).")
    _cli_deploy.print_canary(name)
    _cli_observe.print_figures(name)
    for reason in report["pending"]:
        console.print(f"[yellow]Pending:[/] {reason}", highlight=False)
    for error in report["errors"]:
        console.print(f"[red]Error:[/] {error}", highlight=False)


@command
def logs(
    name: str = typer.Argument(..., help="The model's name."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(100, "--tail", help="Lines to show from the end of each replica's log."),
) -> None:
    """Print the replicas' logs (Ray's log API).

    Example: `lambdaml logs hello --follow`
    """
    for line in observe.logs(name, follow=follow, tail=tail):
        console.print(line, highlight=False, markup=False)
        if follow:  # each line as it comes, also into a pipe (`lambdaml logs -f hello | grep ...`)
            console.file.flush()


@command
def schema(
    name: str = typer.Argument(..., help="The model's name."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole OpenAPI document."),
) -> None:
    """Show a model's inputs and output.

    Example: `lambdaml schema hello`
    """
    document = _openapi(name)
    if as_json:
        console.print_json(data=document)
        return
    schemas = document["components"]["schemas"]
    table = Table("input", "type", "default", "limits", "description", title=f"{name} inputs")
    required = set(schemas["Input"].get("required", []))
    for field, spec in schemas["Input"].get("properties", {}).items():
        kind = "file" if spec.get("x-lambdaml-file") else spec.get("type") or "/".join(_cli_io._types(spec)) or "any"
        default = "(required)" if field in required else json.dumps(spec.get("default"))
        table.add_row(field, kind, default, _limits(spec), spec.get("description") or "")
    console.print(table)
    output = schemas.get("Output", {})
    console.print(f"output: {'file' if 'x-lambdaml-file' in json.dumps(output) else output.get('type', 'any')}")


_LIMITS = {"minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}", "exclusiveMaximum": "< {}",
           "minLength": "length >= {}", "maxLength": "length <= {}", "minItems": "items >= {}", "maxItems": "items <= {}",
           "pattern": "matches {}", "enum": "one of {}"}


def _limits(spec: dict[str, Any]) -> str:
    """The constraints openapi.json shows for an input, in a few words (``>= 1, <= 50``)."""
    return ", ".join(text.format(", ".join(map(str, spec[key])) if key == "enum" else spec[key])
                     for key, text in _LIMITS.items() if key in spec)


# ------------------------------------------------------------------ change

for _change in (_cli_deploy.versions, _cli_deploy.rollback, _cli_deploy.promote, _cli_deploy.scale,
                _cli_deploy.hardware, _cli_deploy.cost):
    command(_change)


@command
def delete(name: str = typer.Argument(..., help="The model's name.")) -> None:
    """Delete a model's deployment (its stored versions stay).

    Example: `lambdaml delete hello`
    """
    from lambdaml.deploy import delete as delete_model

    observe.model_info(name)  # a clear error for a name that is not deployed
    delete_model(name)
    console.print(f"Deleted {name}.")


# ------------------------------------------------------------------ the local cluster


@command
def up(
    simulate: Optional[pathlib.Path] = typer.Option(
        None, "--simulate", help="A cluster-launcher YAML (e.g. cluster.yaml) whose node types to simulate locally."
    ),
    idle_timeout: float = typer.Option(60.0, help="With --simulate: idle seconds before a simulated node is removed."),
    empty: bool = typer.Option(False, "--empty", help="Do not bring back the models that ran before `lambdaml down`."),
) -> None:
    """Start the local cluster in the background (deploy starts it too), with the models it ran before.

    Every model deployed and not deleted comes back at its last deployed version (`--empty` skips that).

    With `--simulate cluster.yaml` the local cluster behaves like that cluster: its head
    takes no replicas, and the autoscaler adds a fake node of the right type (fake GPUs
    included) when a replica needs one, and removes it when idle. Nodes are local processes.

    Example: `lambdaml up` or `lambdaml up --simulate cluster.yaml`
    """
    simulation = None if simulate is None else Simulation(simulate.resolve(), idle_timeout)
    info = cluster.start(simulate=simulation)
    if simulation is not None and info.simulated is None:
        raise ClusterError("A local cluster that simulates nothing is already running. Stop it first: `lambdaml down`")
    what = f"Simulated cluster ({info.simulated})" if info.simulated else "Local cluster"
    console.print(f"{what} running. Predictions API: {info.http_url}  Ray dashboard: {info.dashboard_url}",
                  highlight=False)
    if empty:
        return
    from lambdaml.deploy import restore

    brought, failed = restore()
    if brought:
        console.print("Brought back: " + ", ".join(f"{d.name} ({d.version})" for d in brought), highlight=False)
    for name, reason in failed.items():
        errors.print(f"[yellow]Could not bring back {name}:[/] {reason}", highlight=False)


@command
def node_types(
    config: pathlib.Path = typer.Argument(..., help="The cluster's launcher YAML (on a head: ~/ray_bootstrap_config.yaml)."),
) -> None:
    """Tell deploys which node types this cluster's autoscaler can add.

    Run once after the head starts (cluster.yaml does). Deploys then pick GPU fallbacks by
    the node types too, and refuse a model no node type can hold instead of leaving it waiting.

    Example: `lambdaml --address 127.0.0.1:6379 node-types ~/ray_bootstrap_config.yaml`
    """
    _, types = read_cluster_yaml(config)
    cluster.connect(start_embedded=False)
    publish(types)
    console.print(f"This cluster can add: {', '.join(types) or 'no node types'}.", highlight=False)


@command
def down() -> None:
    """Stop the local cluster and every model on it.

    Example: `lambdaml down`
    """
    console.print("Local cluster stopped." if cluster.shutdown() else "No local cluster was running.")


command(_cli_observe.ui)


@command
def dashboard() -> None:
    """Print the Ray dashboard's URL, and where its login token is.

    Example: `lambdaml dashboard`
    """
    info = cluster.current()
    if info is None:
        raise ClusterError("No lambdaml cluster is running on this machine. Start one with `lambdaml up`.")
    console.print(info.dashboard_url, highlight=False)
    if info.embedded:
        token = auth_token_path(cluster_settings())
        errors.print(f"It asks for the cluster's token (Ray's token authentication): `cat {token}`", highlight=False)


if __name__ == "__main__":
    app()

