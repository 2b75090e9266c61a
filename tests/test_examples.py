"""Every file in examples/ runs end to end against the session's cluster."""

import io
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image
from nbclient import NotebookClient

from lambdaml.deploy import delete

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_all_examples_are_covered():
    examples = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".ipynb")}
    assert examples == {
        "hello.py", "echo_class.py", "grayscale.py", "quickstart.ipynb", "stream_text.py", "torch_batch.py",
        "tuned_greeter.py",
    }


@pytest.mark.parametrize(
    "example, app, expected",
    [
        ("hello.py", "hello", [".remote():        hello ada hello ada", "lambdaml.run():   hello grace", "Ray dashboard:"]),
        ("echo_class.py", "echo", ["echo: HI THERE", "succeeded", "echoing 9 characters"]),
        ("stream_text.py", "stream-text", ["streamed: Once ", "text/event-stream"]),
        ("torch_batch.py", "torch-classifier", ["first result: {'label':", "'device': 'cpu'", "largest batch seen:"]),
        ("tuned_greeter.py", "greeter", ["before: hello, ada", "training: succeeded", "after: hey, ada"]),
    ],
)
def test_example_runs(cluster, example, app, expected):
    try:
        output = run_example(example)
    finally:
        delete(app)
    for text in expected:
        assert text in output


def test_quickstart_notebook_runs_headless(cluster, tmp_path):
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        delete("quickstart")
    outputs = "".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "Hello, Ada!" in outputs and "Hi there, Ada." in outputs and "Ray dashboard: http://127.0.0.1:" in outputs


def test_grayscale_example_writes_its_output_to_s3(cluster, s3):
    env = {**os.environ, "LAMBDAML_OUTPUT_URL": "s3://lmt-bucket/examples"}
    try:
        output = run_example("grayscale.py", env)
    finally:
        delete("grayscale")
    url = output.split("output: ", 1)[1].split()[0]
    assert url.startswith("s3://lmt-bucket/examples/") and url.endswith("/gray.png")
    picture = Image.open(io.BytesIO(s3.cat(url)))
    assert picture.mode == "L" and picture.size == (64, 48)
