"""Safety checks before a version takes traffic (cog-safe-push, built in): ``lambdaml check`` and
``lambdaml deploy --check``.

The new version is stored and started beside the live one as its canary application, with
no share of traffic (``lambdaml.canary``); then, in order:

1. schema lint: every input has a description, defaults satisfy their own constraints,
   choices are not empty (``_schema_checks.lint``);
2. compatibility with the live version: removed inputs, changed types, new required inputs
   without a default, narrowed ranges or choices, a changed output type
   (``_schema_checks.breaking_changes``; allowed with ``allow_breaking``);
3. test cases from ``lambdaml.yaml`` next to the model file, in cog-safe-push's shape
   (``predict.test_cases``: ``inputs`` and one of ``exact_string``, ``error_contains``,
   ``jq_query``, ``match_url``), and with ``predict.compare_outputs`` the live version's output
   for each case too;
4. fuzzing: ``predict.fuzz.iterations`` inputs generated from the new version's input schema
   (schemathesis, for the version's own ``POST /predictions``), each of which must not crash
   it, run past the timeout, or be refused.

Predictions go to the applications through Serve handle calls, not the HTTP routes, so
nothing the checks send is seen by callers; they are recorded like any prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lambdaml import _schema_checks, cluster
from lambdaml._settings import CANARY_SUFFIX
from lambdaml.control.auth import OPEN
from lambdaml.errors import ConfigError, DeployError, NotDeployedError

if TYPE_CHECKING:
    from lambdaml.deploy import Progress
    from lambdaml.model import Model

CONFIG_FILE = "lambdaml.yaml"
CHECKERS = ("exact_string", "error_contains", "jq_query", "match_url")


class Case(BaseModel):
    """One test case: inputs, and at most one checker of the output (none: it must succeed)."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    exact_string: str | None = None
    error_contains: str | None = None
    jq_query: str | None = None
    match_url: str | None = None

    @model_validator(mode="after")
    def _one_checker(self) -> "Case":
        given = [name for name in CHECKERS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"a test case takes one checker, not {' and '.join(given)}")
        return self


class Fuzz(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cog-safe-push's `prompt` (an AI writes its inputs) has no use here

    iterations: int = Field(default=10, ge=0)
    fixed_inputs: dict[str, Any] = Field(default_factory=dict)
    disabled_inputs: list[str] = Field(default_factory=list)


class PredictChecks(BaseModel):
    model_config = ConfigDict(extra="ignore")

    compare_outputs: bool = True
    predict_timeout: float = Field(default=300.0, gt=0, le=600)
    test_cases: list[Case] = Field(default_factory=list)
    fuzz: Fuzz = Field(default_factory=Fuzz)


class CheckConfig(BaseModel):
    """``lambdaml.yaml``: cog-safe-push.yaml's keys that apply (``model``, ``test_hardware``... are ignored)."""

    model_config = ConfigDict(extra="ignore")

    predict: PredictChecks = Field(default_factory=PredictChecks)
    ignore_schema_compatibility: bool = False


def load_config(path: Path | None, model_file: Path | None) -> CheckConfig:
    """``path``, else ``lambdaml.yaml`` beside the model file, else the defaults (lint, compatibility, 10 fuzz inputs)."""
    if path is None and model_file is not None and (model_file.parent / CONFIG_FILE).is_file():
        path = model_file.parent / CONFIG_FILE
    if path is None:
        return CheckConfig()
    try:
        return CheckConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except FileNotFoundError:
        raise ConfigError(f"No test file at {path}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid checks file: {exc}") from None


@dataclass(frozen=True)
class Result:
    """One row of the report."""

    check: str
    passed: bool
    details: str


class Target:
    """One running application of the model: predictions through its handle, answered as records."""

    def __init__(self, app: str, timeout_s: float) -> None:
        self.app = app
        self._timeout = timeout_s

    def predict(self, inputs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``POST /predictions`` with these inputs, held up to the timeout."""
        headers = {b"prefer": f"wait={self._timeout:g}".encode(), b"content-type": b"application/json"}
        raw = json.dumps({"input": inputs}).encode()
        status, body = cluster.call_app(self.app, "create_forwarded", raw, headers, OPEN, timeout_s=self._timeout + 30)
        return status, json.loads(body)


@dataclass(frozen=True)
class Report:
    """The checks' results for ``version``."""

    version: str
    results: list[Result]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)


def check(model: Model, settings: dict[str, Any] | None = None, tests: Path | None = None,
          model_file: Path | None = None, allow_breaking: bool = False, timeout: float = 300.0,
          progress: Progress | None = None) -> Report:
    """Store ``model`` and run the checks against it, started beside the live version without traffic,
    then remove it. ``if check(m).passed: m.deploy()`` is what ``lambdaml deploy --check`` does."""
    from ray import serve

    from lambdaml import canary
    from lambdaml.artifacts import load_manifest
    from lambdaml.deploy import app_status, run_stored, stage

    progress = progress or (lambda stage, detail: None)
    config = load_config(tests, model_file)
    name = model.name
    if canary.current(name) is not None:
        raise DeployError(f"A canary of {name!r} is running: promote or drop it (`lambdaml rollback {name}`) first.")
    store, manifest, chosen, secrets, planned = stage(model, settings, progress)
    try:
        app_status(name)
        live_version = store.current_version(name)
    except NotDeployedError:
        live_version = None
    live_openapi = load_manifest(store.artifact_url(name, live_version)).openapi if live_version else None
    run_stored(store, manifest, chosen, secrets, planned, True, timeout, progress, canary=True)
    try:
        progress("checks", f"checking version {manifest.version}")
        report = Report(manifest.version, run_checks(name, name + CANARY_SUFFIX, manifest.openapi or {}, live_openapi,
                                                     config, allow_breaking))
    finally:
        cluster.forget_handle(name + CANARY_SUFFIX)
        serve.delete(name + CANARY_SUFFIX)
    return report


def run_checks(name: str, new_app: str, new_openapi: dict[str, Any], live_openapi: dict[str, Any] | None,
               config: CheckConfig, allow_breaking: bool) -> list[Result]:
    """Every check against the new version (``new_app``) and, where one runs, the live version."""
    timeout = config.predict.predict_timeout
    new, live = Target(new_app, timeout), Target(name, timeout) if live_openapi is not None else None
    problems = _schema_checks.lint(new_openapi)
    results = [Result("schema lint", not problems, "; ".join(problems) or "every input described and consistent")]
    if live_openapi is None:
        results.append(Result("compatibility", True, "no live version to compare with"))
    else:
        changes = _schema_checks.breaking_changes(live_openapi, new_openapi)
        allowed = allow_breaking or config.ignore_schema_compatibility
        details = "; ".join(changes) or "callers of the live version need no change"
        if changes and allowed:
            details += " (allowed)"
        results.append(Result("compatibility", not changes or allowed, details))
    for index, case in enumerate(config.predict.test_cases, 1):
        compare_with = live if config.predict.compare_outputs else None
        results.append(_test_case(index, case, new, compare_with))
    if config.predict.fuzz.iterations:
        results.append(_fuzz(new, new_openapi, config.predict.fuzz))
    return results


def _test_case(index: int, case: Case, new: Target, live: Target | None) -> Result:
    label = f"test case {index}"
    status, body = new.predict(case.inputs)
    if status not in (200, 422):
        return Result(label, False, f"HTTP {status}: {body.get('detail') or body.get('status')}")
    error = body.get("error") or body.get("detail")
    failed = status == 422 or body.get("status") != "succeeded"
    if case.error_contains is not None:
        if failed and case.error_contains in str(error):
            return Result(label, True, f"failed as expected: {str(error)[:120]}")
        return Result(label, False, f"expected an error containing {case.error_contains!r}, got "
                                    + (f"{error!r}" if failed else f"the output {_short(body.get('output'))}"))
    if failed:
        return Result(label, False, f"{body.get('status', 'invalid')}: {str(error)[:200]}")
    output = body.get("output")
    problem = _check_output(case, output)
    if problem is None and live is not None:
        _, live_body = live.predict(case.inputs)
        if live_body.get("output") != output:
            problem = f"the live version answered {_short(live_body.get('output'))}, the new one {_short(output)}"
    return Result(label, problem is None, problem or f"output {_short(output)}")


def _check_output(case: Case, output: Any) -> str | None:
    """Why the output fails the case's checker; None if it passes."""
    if case.exact_string is not None and output != case.exact_string:
        return f"expected {case.exact_string!r}, got {_short(output)}"
    if case.jq_query is not None:
        import jq  # the `check` extra: pip install 'lambdaml[check]'

        try:
            verdict = jq.compile(case.jq_query).input_value(output).first()
        except ValueError as exc:
            return f"jq query {case.jq_query!r} could not run: {exc}"
        if verdict is not True:
            return f"jq query {case.jq_query!r} gave {verdict!r} for {_short(output)}"
    if case.match_url is not None:
        try:
            got = _read(output) if isinstance(output, str) else None
        except (OSError, ValueError, httpx.HTTPError):  # not a file URL
            got = None
        if got != _read(case.match_url):
            return f"the output {_short(output)} is not the file at {case.match_url}"
    return None


def _read(url: str) -> bytes:
    """The bytes a reference or output file URL holds (``data:``, ``http(s)://``, or any fsspec URL)."""
    if url.startswith(("http://", "https://")):
        return httpx.get(url, timeout=60, follow_redirects=True).content
    import fsspec

    with fsspec.open(url, "rb") as file:
        return file.read()


def _fuzz(new: Target, openapi: dict[str, Any], fuzz: Fuzz) -> Result:
    """``fuzz.iterations`` inputs the schema allows: none may crash the model, hang past the timeout or be refused.

    The inputs are schemathesis' for the version's own ``POST /predictions`` (drawn through
    hypothesis, derandomized: the same inputs on every run).
    """
    import schemathesis  # the `check` extra: pip install 'lambdaml[check]'
    from hypothesis import HealthCheck, given, settings

    properties, required = _schema_checks.inputs_of(openapi)
    files = sorted(key for key in required if properties[key].get("x-lambdaml-file") and key not in fuzz.fixed_inputs)
    if files:
        return Result("fuzz", True, f"skipped: {', '.join(files)} needs a file (give one in predict.fuzz.fixed_inputs)")
    operation = schemathesis.openapi.from_dict(openapi)["/predictions"]["POST"]
    tried: list[dict[str, Any]] = []

    @settings(max_examples=fuzz.iterations, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def generate(case: Any) -> None:
        inputs = {key: value for key, value in (case.body or {}).get("input", {}).items() if key not in fuzz.disabled_inputs}
        tried.append({**inputs, **fuzz.fixed_inputs})

    generate()
    for inputs in tried[: fuzz.iterations]:
        status, body = new.predict(inputs)
        if status >= 500 or status == 202:
            why = "ran past the timeout" if status == 202 else f"HTTP {status}"
            return Result("fuzz", False, f"{why} with input {_short(inputs)}")
        if status == 422:
            return Result("fuzz", False, f"refused an input its own schema allows: {_short(inputs)}: {body.get('detail')}")
        if status == 200 and body.get("status") == "failed":
            return Result("fuzz", False, f"crashed with input {_short(inputs)}: {str(body.get('error'))[:200]}")
    return Result("fuzz", True, f"{len(tried[: fuzz.iterations])} generated inputs, no crash or hang")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
