"""Every file in examples/ runs end to end against the session's cluster."""

import subprocess
import sys
from pathlib import Path

import pytest

from lambdaml.deploy import delete

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_all_examples_are_covered():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {"hello.py", "echo_class.py"}


@pytest.mark.parametrize(
    "example, app, expected",
    [
        ("hello.py", "hello", [".remote():        hello ada hello ada", "lambdaml.run():   hello grace", "Ray dashboard:"]),
        ("echo_class.py", "echo", ["echo: HI THERE", "succeeded", "echoing 9 characters"]),
    ],
)
def test_example_runs(cluster, example, app, expected):
    try:
        output = run_example(example)
    finally:
        delete(app)
    for text in expected:
        assert text in output
