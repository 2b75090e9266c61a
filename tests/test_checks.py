"""Safety checks (`lambdaml check`, `deploy --check`) on the session's cluster: each check fails on a
version written to break it, passes on a good one, and nothing fails rolls out."""

import re
import textwrap

import pytest
from typer.testing import CliRunner

import lambdaml
from lambdaml.cli import app
from lambdaml.deploy import app_status, delete

HEADER = "from lambdaml import Input, model\n\n"
DECORATOR = '@model(name="checked", cpu=0.1, min=1)\n'
LIVE = '''def checked(text: str = Input(description="What to echo"),
            times: int = Input(default=1, ge=1, le=5, description="How often")) -> str:
    return " ".join([text] * times)
'''
VERSIONS = {
    "good": '''def checked(text: str = Input(description="What to echo"),
            times: int = Input(default=1, ge=1, le=5, description="How often")) -> str:
    return " ".join(text for _ in range(times))  # the same answers, other code
''',
    "undescribed": '''def checked(text: str = Input(description="What to echo"), times: int = Input(default=1, ge=1, le=5)) -> str:
    return " ".join([text] * times)
''',
    "breaking": '''def checked(text: str = Input(description="What to echo")) -> str:
    return text
''',
    "wrong": '''def checked(text: str = Input(description="What to echo"),
            times: int = Input(default=1, ge=1, le=5, description="How often")) -> str:
    return " ".join([text.upper()] * times)
''',
    "drifting": '''def checked(text: str = Input(description="What to echo"),
            times: int = Input(default=1, ge=1, le=5, description="How often")) -> str:
    return "".join([text] * times) if times == 3 else " ".join([text] * times)
''',
    "crashing": '''def checked(text: str = Input(description="What to echo"),
            times: int = Input(default=1, ge=1, le=5, description="How often")) -> str:
    if times > 1:
        raise ValueError("cannot repeat")
    return text
''',
}
CHECKS = """
predict:
  compare_outputs: true
  test_cases:
    - inputs: {text: hi, times: 2}
      exact_string: "hi hi"
    - inputs: {text: a}
      jq_query: '. == "a"'
    - inputs: {text: x, times: 9}
      error_contains: "times"
    - inputs: {text: b, times: 3}
    - inputs: {text: "data:text/plain;base64,aGk="}
      match_url: "data:text/plain;base64,aGk="
  fuzz:
    iterations: 8
"""


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def project(cluster, tmp_path_factory):
    """The live version deployed, a file per other version, and lambdaml.yaml beside them."""
    folder = tmp_path_factory.mktemp("checked")
    for name, body in {"live": LIVE, **VERSIONS}.items():
        (folder / f"{name}.py").write_text(HEADER + DECORATOR + body)
    (folder / "lambdaml.yaml").write_text(textwrap.dedent(CHECKS))
    (folder / "schema-only.yaml").write_text("predict:\n  fuzz:\n    iterations: 0\n")
    code, output = cli("deploy", str(folder / "live.py"))
    assert code == 0, output
    yield folder
    delete("checked")


def _live_version() -> str:
    return next(row.version for row in lambdaml.versions("checked") if row.current)


def _no_check_app_left() -> bool:
    from ray import serve

    return "checked.canary" not in serve.status().applications


@pytest.mark.parametrize("version, check, details", [
    ("undescribed", "schema lint", "times: has no description"),
    ("breaking", "compatibility", "times: removed"),
    ("wrong", "test case 1", 'expected \'hi hi\', got "HI HI"'),
    ("drifting", "test case 4", 'the live version answered "b b b", the new one "bbb"'),
    ("crashing", "fuzz", "crashed with input"),
])
def test_each_check_fails_on_a_version_that_breaks_it_and_nothing_rolls_out(project, version, check, details):
    live = _live_version()
    code, output = cli("deploy", str(project / f"{version}.py"), "--check")
    assert code == 1, output
    assert f"✗ checked {check}: {details}" in output, output
    assert "Nothing was rolled out." in output
    assert _live_version() == live and _no_check_app_left()
    assert app_status("checked")["status"] == "RUNNING"


def test_a_breaking_change_can_be_allowed_and_check_alone_deploys_nothing(project):
    live = _live_version()
    code, output = cli("check", str(project / "breaking.py"), "--tests", str(project / "schema-only.yaml"))
    assert code == 1 and "times: removed" in output, output
    code, output = cli("check", str(project / "breaking.py"), "--tests", str(project / "schema-only.yaml"),
                       "--allow-breaking")
    assert code == 0 and "times: removed (allowed)" in output, output
    assert _live_version() == live and _no_check_app_left()


def test_a_good_version_passes_every_check_and_is_rolled_out(project):
    live = _live_version()
    code, output = cli("deploy", str(project / "good.py"), "--check")
    assert code == 0, output
    for check in ("schema lint", "compatibility", *(f"test case {n}" for n in range(1, 6)), "fuzz"):
        assert re.search(rf"{check}\s*│\s*pass", output), (check, output)
    assert "8 generated inputs" in output
    assert _live_version() != live and lambdaml.run("checked", {"text": "ok", "times": 2}) == "ok ok"
    assert _no_check_app_left()
