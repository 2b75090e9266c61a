"""The CLI's deploy-stage commands: deploy (with hardware and scaling options, ``--dry-run``,
``--canary``), scale, hardware, versions, rollback, promote, cost.

``lambdaml.cli`` registers them as commands; the work is
``lambdaml.deploy``, ``lambdaml.canary`` and ``lambdaml.cost``. The hardware and scaling
options (``spec.SETTINGS``) are declared once here, so each reads the same in every command.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.table import Table

from rich.console import Console

from lambdaml import _cli_io, cluster
from lambdaml.errors import ConfigError

console = Console()

GPU: Optional[str] = typer.Option(
    None, "--gpu", help="GPU type per replica, e.g. H100, A100:2, or fallbacks in order: H100,A100. `none` for no GPU."
)
CPU: Optional[float] = typer.Option(None, "--cpu", help="CPUs per replica (fractions allowed).")
MEMORY: Optional[str] = typer.Option(None, "--memory", help="Memory per replica, e.g. 16Gi.")
MIN: Optional[int] = typer.Option(None, "--min", help="Fewest replicas; 0 scales to zero when idle.")
MAX: Optional[int] = typer.Option(None, "--max", help="Most replicas.")
CONCURRENCY: Optional[int] = typer.Option(None, "--concurrency", help="Target predictions in flight per replica.")
SCALEDOWN_AFTER: Optional[float] = typer.Option(None, "--scaledown-after", help="Idle seconds before a replica is removed.")
TIMEOUT: Optional[float] = typer.Option(None, "--timeout", help="Seconds one prediction may run.")
TESTS: Optional[pathlib.Path] = typer.Option(
    None, "--tests", help="The checks' test cases (default: lambdaml.yaml next to the model file).")
ALLOW_BREAKING: bool = typer.Option(
    False, "--allow-breaking", help="Pass the compatibility check even if the new schema breaks the live version's callers.")


def chosen(**options: Any) -> dict[str, Any]:
    """The settings given on the command line (those left out keep their value)."""
    settings = {name: value for name, value in options.items() if value is not None}
    if "gpu" in settings:
        gpu = settings["gpu"].strip()
        settings["gpu"] = None if gpu.lower() == "none" else [part.strip() for part in gpu.split(",") if part.strip()]
    return settings


def describe(settings: dict[str, Any]) -> str:
    """Settings in a few words: ``A100 x1, 0-50 replicas, 4 at once, timeout 600 s``."""
    gpus = " or ".join(f"{gpu['type']} x{gpu['count']}" for gpu in settings.get("gpu") or [])
    parts = [gpus or "no GPU"]
    if settings.get("cpu"):
        parts.append(f"{settings['cpu']:g} CPU")
    if settings.get("memory"):
        parts.append(f"{settings['memory'] / 2**30:g} GiB")
    parts.append(f"{settings.get('min', 0)}-{settings.get('max', 1)} replicas")
    parts.append(f"{settings.get('concurrency', 1)} at once")
    if settings.get("timeout"):
        parts.append(f"timeout {settings['timeout']:g} s")
    return ", ".join(parts)


def dollars(amount: float | None) -> str:
    """``$1,234.56``, or ``-`` for an amount no price is known for."""
    return "-" if amount is None else f"${amount:,.2f}"


def clock(hours: float) -> str:
    """Hours as ``h:mm:ss`` (``26:03:41``): replica time, to the second."""
    seconds = round(hours * 3600)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ------------------------------------------------------------------ commands


def deploy(
    target: str = typer.Argument(..., help="A Python file with @model definitions (optionally `file.py:object`), or a Cog project."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to deploy to."),
    public: bool = typer.Option(False, "--public", help="Let callers without a token run it (as @model(visibility='public'))."),
    gpu: Optional[str] = GPU,
    cpu: Optional[float] = CPU,
    memory: Optional[str] = MEMORY,
    min_replicas: Optional[int] = MIN,
    max_replicas: Optional[int] = MAX,
    concurrency: Optional[int] = CONCURRENCY,
    scaledown_after: Optional[float] = SCALEDOWN_AFTER,
    timeout: Optional[float] = TIMEOUT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print where it would run and what it would cost; change nothing."),
    canary: Optional[float] = typer.Option(
        None, "--canary", help="Run the new version beside the live one with this percentage of new predictions."),
    check: bool = typer.Option(
        False, "--check", help="Run the safety checks against the new version first; roll out only if all pass."),
    tests: Optional[pathlib.Path] = TESTS,
    allow_breaking: bool = ALLOW_BREAKING,
    name: Optional[str] = typer.Option(None, "--name", help="A Cog project's model name (default: its directory's)."),
    upload_url: Optional[str] = typer.Option(
        None, "--upload-url", help="A Cog project's file outputs are PUT to this URL + file name, as `cog serve` does."),
    ignore_system_packages: bool = typer.Option(
        False, "--ignore-system-packages",
        help="Deploy a Cog project whose cog.yaml lists system packages, run commands or CUDA: the cluster has them."),
    strict_python: bool = typer.Option(
        False, "--strict-python", help="Refuse a Cog project whose cog.yaml names another Python than the cluster's."),
) -> None:
    """Deploy every @model in a file (or the one named), or a Cog project (a directory with cog.yaml).

    The hardware and scaling options override what @model(...) says, for this deploy; the
    same code keeps its version whatever they are. Before it rolls out, deploy prints the
    node type the model lands on and its hourly cost at min and max replicas.

    Example: `lambdaml deploy examples/hello.py`, `lambdaml deploy models.py:captioner --gpu H100 --min 1`
    or `lambdaml deploy ./my-cog-model --name captioner`
    """
    from lambdaml.deploy import deploy as deploy_model

    settings = chosen(gpu=gpu, cpu=cpu, memory=memory, min=min_replicas, max=max_replicas, concurrency=concurrency,
                      scaledown_after=scaledown_after, timeout=timeout)
    if address:
        os.environ["LAMBDAML_ADDRESS"] = address
    models = _load(target, name, upload_url, ignore_system_packages, strict_python)
    if public:
        models = [model.with_spec(model.spec.model_copy(update={"visibility": "public"})) for model in models]
    for model in models:  # all checked before any is deployed
        model.spec.with_settings(settings)
    if dry_run:
        _print_plans(models, settings)
        return
    if check and not _checked(models, settings, tests, _model_file(target), allow_breaking):
        console.print("Nothing was rolled out.")
        raise typer.Exit(1)
    results = []
    for model in models:
        with console.status(f"[bold]{model.name}[/]: connecting to the cluster") as status:
            started = time.monotonic()
            deployment = deploy_model(model, progress=_progress(status, model.name), settings=settings, canary=canary)
        console.print(f"  [green]✓[/] {model.name}: ready in {time.monotonic() - started:.1f} s", highlight=False)
        if model.trainer() is not None and canary is None:
            console.print(f"  trainings: `lambdaml train {model.name} -i ...` or POST {deployment.url}-train/trainings",
                          highlight=False)
        results.append(deployment)
    table = Table("name", "version", "URL", "replicas", title="Deployed")
    for deployment in results:
        replicas = deployment.status()["replicas"]
        table.add_row(deployment.name, deployment.version, f"{deployment.url}/predictions",
                      ", ".join(f"{n} {s.lower()}" for s, n in replicas.items()) or "0 (scales up on demand)")
    console.print(table)
    if canary is not None:
        names = " ".join(deployment.name for deployment in results)
        console.print(f"Canary: `lambdaml status {names}` compares the versions; `lambdaml promote {names}` makes the "
                      f"new one live, `lambdaml rollback {names}` drops it.", highlight=False)
    console.print(f"Ray dashboard: {results[0].dashboard_url}", highlight=False)


def _load(target: str, name: str | None, upload_url: str | None, ignore_system_packages: bool,
          strict_python: bool) -> list[Any]:
    """The models to deploy: a Cog project's one, or a Python file's @models (which the Cog options do not apply to)."""
    from lambdaml import cog

    if cog.find_root(target) is not None:
        model = cog.load(target, name=name, upload_url=upload_url, ignore_system_packages=ignore_system_packages,
                         strict_python=strict_python)
        for note in model.notes:
            console.print(f"  {model.name}: {note}", highlight=False, soft_wrap=True)
        return [model]
    given = [flag for flag, value in (("--name", name), ("--upload-url", upload_url),
                                      ("--ignore-system-packages", ignore_system_packages),
                                      ("--strict-python", strict_python)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to Cog projects (a directory with cog.yaml); {target} is not one. "
                          "A Python file's models take their name and settings from @model(...)")
    return _cli_io.load_models(target)


def check(
    target: str = typer.Argument(..., help="A Python file with @model definitions (optionally `file.py:object`), or a Cog project."),
    tests: Optional[pathlib.Path] = TESTS,
    allow_breaking: bool = ALLOW_BREAKING,
) -> None:
    """Run the safety checks against a new version, started beside the live one; deploy nothing.

    Schema lint, compatibility with the live version, the test cases of lambdaml.yaml and
    fuzzing (docs/safe-deploys.md). Exit status 1 if any check fails.

    Example: `lambdaml check models.py` or `lambdaml check models.py:captioner --tests checks.yaml`
    """
    if not _checked(_load(target, None, None, False, False), {}, tests, _model_file(target), allow_breaking):
        raise typer.Exit(1)


def _checked(models: list[Any], settings: dict[str, Any], tests: pathlib.Path | None, model_file: pathlib.Path,
             allow_breaking: bool) -> bool:
    """Every model's checks, each with its report table; whether all passed."""
    from lambdaml import checks

    passed = True
    for model in models:
        with console.status(f"[bold]{model.name}[/]: connecting to the cluster") as status:
            report = checks.check(model, settings, tests, model_file, allow_breaking, progress=_progress(status, model.name))
        table = Table("check", "result", "details", title=f"{model.name} {report.version}: checks")
        for result in report.results:
            table.add_row(result.check, "[green]pass[/]" if result.passed else "[bold red]FAIL[/]", result.details)
        console.print(table)
        for result in report.results:  # whole lines too, for CI logs and searches
            if not result.passed:
                console.print(f"[red]✗[/] {model.name} {result.check}: {result.details}", highlight=False, soft_wrap=True)
        passed = passed and report.passed
    return passed


def _model_file(target: str) -> pathlib.Path:
    """The file whose folder holds lambdaml.yaml: the model file, or a Cog project's cog.yaml."""
    from lambdaml import cog

    root = cog.find_root(target)
    return root / "cog.yaml" if root is not None else pathlib.Path(target.partition(":")[0])


def _progress(status: Any, name: str) -> Callable[[str, str], None]:
    """What a deploy reports, for the CLI: the spinner's line, and a lasting line for the stages that matter."""

    def progress(stage: str, detail: str) -> None:
        status.update(f"[bold]{name}[/]: {detail}")
        if stage in ("cost", "upload", "install", "canary"):
            console.print(f"  [green]✓[/] {name}: {detail}", highlight=False)

    return progress


def _print_plans(models: list[Any], settings: dict[str, Any]) -> None:
    from lambdaml.deploy import plan

    for model in models:
        planned = plan(model.spec.with_settings(settings))
        console.print(f"[bold]{model.name}[/]: {describe(planned.spec.settings())}", highlight=False)
        console.print(f"  cost: {planned.estimate.line()}", highlight=False)
    console.print("Nothing was deployed (--dry-run).")


def versions(name: str = typer.Argument(..., help="The model's name.")) -> None:
    """List a model's stored versions and when each was deployed.

    Example: `lambdaml versions hello`
    """
    from lambdaml.deploy import versions as list_versions

    table = Table("version", "created", "last deployed", "with", "")
    for row in list_versions(name):
        table.add_row(row.version, row.created_at, row.deployed_at[-1] if row.deployed_at else "-",
                      describe(row.settings), "current" if row.current else "")
    console.print(table)


def rollback(
    name: str = typer.Argument(..., help="The model's name."),
    version: Optional[str] = typer.Argument(None, help="The version to deploy (default: the previous one)."),
) -> None:
    """Redeploy the previous version of a model, or the one given.

    Example: `lambdaml rollback hello` or `lambdaml rollback hello 3f2a9c81d0e4b7a65c21`
    """
    from lambdaml import canary
    from lambdaml.deploy import rollback as roll_back

    cluster.connect(start_embedded=False)
    running = version is None and canary.current(name)
    with console.status(f"[bold]{name}[/]: " + ("dropping its canary" if running else "rolling back")):
        deployment = roll_back(name, version)
    if running:
        console.print(f"Dropped the canary {running['version']}: every new prediction goes to {deployment.version}.",
                      highlight=False)
        return
    console.print(f"{name} is now at version {deployment.version}: {deployment.url}/predictions", highlight=False)


def promote(name: str = typer.Argument(..., help="The model's name.")) -> None:
    """Make a model's canary its live version (its replicas are replaced one by one), and remove the canary.

    Example: `lambdaml promote hello`
    """
    from lambdaml import canary

    cluster.connect(start_embedded=False)
    with console.status(f"[bold]{name}[/]: rolling its canary out"):
        deployment = canary.promote(name)
    console.print(f"{name} is now at version {deployment.version}: {deployment.url}/predictions", highlight=False)


def cost(
    name: Optional[str] = typer.Argument(None, help="The model's name (default: every model)."),
    since: str = typer.Option("24h", "--since", help="The period: 30m, 24h, 7d..."),
) -> None:
    """What models cost over a period, from their replicas' running time and the nodes' hourly prices.

    Example: `lambdaml cost` or `lambdaml cost captioner --since 7d`
    """
    from lambdaml import cost as costs
    from lambdaml._durations import parse_duration

    period = parse_duration(since)
    rows = costs.actual(name, period)
    if not rows:
        console.print(f"No replica of {name or 'any model'} ran in the last {since}.")
        return
    table = Table("model", "replica time", "cost", f"max up {since}", f"1 up {since}", "saved vs max",
                  title=f"Cost over the last {since}")
    money = dollars
    for row in rows:
        saved = None if row.dollars is None or row.kept_at_max is None else row.kept_at_max - row.dollars
        table.add_row(row.model, clock(row.replica_hours), money(row.dollars), money(row.kept_at_max),
                      money(row.kept_at_one), money(saved))
    if len(rows) > 1:
        known = [row.dollars for row in rows]
        table.add_row("total", clock(sum(row.replica_hours for row in rows)),
                      money(None if None in known else sum(known)), "", "", "")
    console.print(table)
    if any(row.dollars is None for row in rows):
        console.print(f"-: no price known for the nodes it ran on; {costs.PRICES_HINT}.", highlight=False)


def _reconfigure(name: str, settings: dict[str, Any]) -> None:
    from lambdaml.deploy import reconfigure, versions as list_versions

    if not settings:
        raise ConfigError("nothing to change: give at least one option (see --help)")
    cluster.connect(start_embedded=False)
    with console.status(f"[bold]{name}[/]: replacing its replicas with the new settings"):
        deployment = reconfigure(name, **settings)
    current = next(row for row in list_versions(name) if row.current)
    console.print(f"{name} runs version {deployment.version} (unchanged) with {describe(current.settings)}",
                  highlight=False)


def scale(
    name: str = typer.Argument(..., help="The model's name."),
    min_replicas: Optional[int] = MIN,
    max_replicas: Optional[int] = MAX,
    concurrency: Optional[int] = CONCURRENCY,
    scaledown_after: Optional[float] = SCALEDOWN_AFTER,
    timeout: Optional[float] = TIMEOUT,
) -> None:
    """Change how a running model scales, without a new version.

    Example: `lambdaml scale hello --min 1 --max 8`
    """
    _reconfigure(name, chosen(min=min_replicas, max=max_replicas, concurrency=concurrency,
                              scaledown_after=scaledown_after, timeout=timeout))


def hardware(
    name: str = typer.Argument(..., help="The model's name."),
    gpu: Optional[str] = GPU,
    cpu: Optional[float] = CPU,
    memory: Optional[str] = MEMORY,
) -> None:
    """Move a running model to other hardware, without a new version.

    Example: `lambdaml hardware captioner --gpu L4` or `lambdaml hardware captioner --gpu none --cpu 4`
    """
    _reconfigure(name, chosen(gpu=gpu, cpu=cpu, memory=memory))


def print_canary(name: str) -> None:
    """While a canary runs: both versions side by side, from their records since it began."""
    from lambdaml import canary

    running = canary.current(name)
    if running is None:
        return
    figures = canary.compare(name)
    table = Table("version", "", "share", "predictions", "errors", "p50", "p95",
                  title=f"Canary since {time.strftime('%H:%M:%S', time.localtime(running['since']))}")
    for version, role, share in ((running["live"], "live", 100 - running["percent"]),
                                 (running["version"], "canary", running["percent"])):
        found = figures.get(version) or {"count": 0, "failed": 0, "error_rate": 0.0, "p50": None, "p95": None}
        table.add_row(version or "-", role, f"{share:g}%", str(found["count"]),
                      f"{found['failed']} ({found['error_rate']:.1%})", _seconds(found["p50"]), _seconds(found["p95"]))
    console.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
