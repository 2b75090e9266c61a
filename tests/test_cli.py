"""The lambdaml command, through typer's CliRunner and as a real subprocess, on the session's cluster."""

import base64
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import lambdaml
import pytest
from typer.testing import CliRunner

from lambdaml.cli import app
from lambdaml.deploy import delete

runner = CliRunner()
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def cli(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-models")
    (folder / "cli_helpers.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (folder / "models.py").write_text(
        textwrap.dedent(
            """
            import pathlib
            import tempfile

            import cli_helpers
            from lambdaml import Input, Path, model

            @model(name="cli-shout", cpu=0.1, min=1)
            def shout(text: str = Input(description="What to shout"), times: int = Input(default=1, ge=1, le=3)) -> str:
                print("shouting", text)
                if text == "boom":
                    raise ValueError("cannot shout boom")
                return " ".join([cli_helpers.shout(text)] * times)

            @model(name="cli-files", cpu=0.1, min=1)
            def reverse_bytes(data: Path = Input(description="Any file")) -> Path:
                out = pathlib.Path(tempfile.mkdtemp()) / "reversed.bin"
                out.write_bytes(data.read_bytes()[::-1])
                return out
            """
        )
    )
    return folder / "models.py"


@pytest.fixture(scope="module")
def deployed_cli(cluster, model_file):
    code, output = cli("deploy", str(model_file))
    assert code == 0, output
    yield output
    for name in ("cli-shout", "cli-files"):
        delete(name)


def test_deploy_shows_stages_and_a_table(deployed_cli):
    assert "storing the artifact" in deployed_cli and "ready in" in deployed_cli
    assert "cli-shout" in deployed_cli and "cli-files" in deployed_cli and "/predictions" in deployed_cli
    assert "Ray dashboard: http://127.0.0.1:" in deployed_cli


def test_predict_converts_values_and_handles_files(deployed_cli, tmp_path):
    code, output = cli("predict", "cli-shout", "-i", "text=hey", "-i", "times=2")
    assert code == 0 and "HEY! HEY!" in output
    source = tmp_path / "in.bin"
    source.write_bytes(PNG)
    code, output = cli("predict", "cli-files", "-i", f"data=@{source}", "-o", str(tmp_path / "out"))
    assert code == 0, output
    assert (tmp_path / "out" / "output.bin").read_bytes() == PNG[::-1] or any(
        p.read_bytes() == PNG[::-1] for p in (tmp_path / "out").iterdir()
    )
    code, output = cli("predict", "cli-shout", "-i", "text=hi", "--json")
    assert code == 0 and '"status": "succeeded"' in output and '"logs": "shouting hi\\n"' in output


def test_ls_status_logs_and_schema(deployed_cli):
    code, output = cli("ls")
    assert code == 0 and "cli-shout" in output and "1/1" in output and "RUNNING" in output
    code, output = cli("status", "cli-shout")
    assert code == 0 and "RUNNING" in output
    assert cli("predict", "cli-shout", "-i", "text=boom")[0] == 1  # a failed prediction is a failed command
    code, output = cli("status", "cli-shout")
    assert code == 0 and "cannot shout boom" in output
    deadline = time.monotonic() + 10  # the replica writes its log file once a second (flush_serve_logs_every)
    while "shouting" not in (output := cli("logs", "cli-shout", "--tail", "50")[1]) and time.monotonic() < deadline:
        time.sleep(0.5)
    code, output = cli("logs", "cli-shout", "--tail", "50")
    assert code == 0 and "shouting" in output
    code, output = cli("schema", "cli-shout")
    assert code == 0 and "What to shout" in output and "integer" in output and ">= 1" in output  # times' limits


def test_logs_follow_prints_lines_as_the_replica_writes_them(deployed_cli):
    marker = "follow-" + os.urandom(4).hex()
    follower = subprocess.Popen([sys.executable, "-m", "lambdaml.cli", "logs", "cli-shout", "--follow", "--tail", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
        lines.get(timeout=60)  # the log's last line: it is following now, so what it prints next was written later
        assert cli("predict", "cli-shout", "-i", f"text={marker}")[0] == 0
        deadline = time.monotonic() + 60
        while marker not in (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))):
            assert time.monotonic() < deadline, line
        assert f"shouting {marker}" in line and follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(10)


def test_rollback_versions_and_delete(cluster, tmp_path):
    source = tmp_path / "versioned.py"
    template = 'from lambdaml import model\n\n@model(name="cli-versioned", cpu=0.1, min=1)\ndef v() -> str:\n    return "{}"\n'
    source.write_text(template.format("one"))
    assert cli("deploy", str(source))[0] == 0
    source.write_text(template.format("two"))
    assert cli("deploy", f"{source}:v")[0] == 0
    assert "two" in cli("predict", "cli-versioned")[1]
    code, output = cli("rollback", "cli-versioned")
    assert code == 0, output
    assert "one" in cli("predict", "cli-versioned")[1]
    code, output = cli("versions", "cli-versioned")
    assert code == 0 and output.count("current") == 1
    # Hardware and scaling change without a new version; bad values are refused with @model's words.
    code, output = cli("scale", "cli-versioned", "--max", "3")
    assert code == 0 and "(unchanged)" in output and "1-3 replicas" in output, output
    assert "one" in cli("predict", "cli-versioned")[1]
    code, output = cli("versions", "cli-versioned")
    assert output.count("current") == 1 and "1-3 replicas" in output and "1-1 replicas" in output, output
    for args, message in ((["hardware", "cli-versioned", "--gpu", "Z80"], "gpu: unknown GPU 'Z80'"),
                          (["scale", "cli-versioned", "--min", "5"], "min (5) is larger than max (3)"),
                          (["scale", "cli-versioned"], "nothing to change"),
                          (["deploy", str(source), "--max", "0"], "max: Input should be greater than or equal to 1")):
        code, output = cli(*args)
        assert code == 1 and message in output and "Traceback" not in output, output
    assert cli("delete", "cli-versioned")[0] == 0
    assert "No model named 'cli-versioned'" in cli("delete", "cli-versioned")[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "no-such-model"], "No model named 'no-such-model'"),
        (["status", "no-such-model"], "No model named 'no-such-model'"),
        (["predict", "cli-shout", "-i", "text"], "-i expects key=value"),
        (["predict", "cli-shout", "-i", "times=9", "-i", "text=x"], "times: Input should be less than or equal to 3"),
        (["predict", "cli-files", "-i", "data=@/no/such/file.png"], "no file at /no/such/file.png"),
        (["deploy", "/no/such/models.py"], "No file at /no/such/models.py"),
    ],
)
def test_errors_are_one_or_two_lines_without_traceback(deployed_cli, args, message):
    code, output = cli(*args)
    assert code == 1 and message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) <= 3


def test_no_cluster_running_is_a_clear_error(tmp_path):
    env = {**os.environ, "LAMBDAML_TEMP_DIR": str(tmp_path / "none"), "LAMBDAML_RAY_PORT": "6999"}
    for args in (["ls"], ["predict", "hello", "-i", "name=x"], ["dashboard"]):
        result = subprocess.run([sys.executable, "-m", "lambdaml.cli", *args], env=env, capture_output=True, text=True)
        assert result.returncode == 1, result.stderr
        assert "No lambdaml cluster is running" in result.stderr and "Traceback" not in result.stderr


def test_every_command_has_help_with_an_example():
    for command in ("deploy", "predict", "ls", "status", "logs", "delete", "rollback", "schema", "up", "down",
                    "dashboard", "versions", "scale", "hardware", "cost", "promote"):
        code, output = cli(command, "--help")
        assert code == 0 and "Example" in output, command
        assert "<bool>" not in output, command  # a flag takes no value: no type shown
    assert "<bool>" not in cli("--help")[1] and "<bool>" not in cli("predictions", "show", "--help")[1]


def test_real_subprocess_deploys_and_predicts(cluster, tmp_path):
    source = tmp_path / "sub.py"
    source.write_text('from lambdaml import model\n\n@model(name="cli-sub", cpu=0.1)\ndef sub(x: int) -> int:\n    return x * 3\n')
    lambdaml_command = [sys.executable, "-m", "lambdaml.cli"]
    try:
        deployed = subprocess.run([*lambdaml_command, "deploy", str(source)], capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stderr
        predicted = subprocess.run([*lambdaml_command, "predict", "cli-sub", "-i", "x=14"], capture_output=True,
                                   text=True, timeout=120)
        assert predicted.returncode == 0 and predicted.stdout.strip() == "42", predicted.stderr
    finally:
        delete("cli-sub")


def test_predict_waits_for_a_replica_that_takes_long_to_start(cluster, tmp_path):
    """At zero replicas, a setup() longer than the old 30 s read timeout: predict follows it to the end."""
    source = tmp_path / "slow_start.py"
    source.write_text(textwrap.dedent("""
        import time
        from lambdaml import model

        @model(name="cli-slow-start", cpu=0.1, min=0, max=1)
        class SlowStart:
            def setup(self):
                time.sleep(35)  # stands in for weights loading, or packages installing

            def predict(self, x: int) -> int:
                return x * 2
    """))
    try:
        assert cli("deploy", str(source))[0] == 0
        predicted = subprocess.run([sys.executable, "-m", "lambdaml.cli", "predict", "cli-slow-start", "-i", "x=21"],
                                   capture_output=True, text=True, timeout=300)
        assert predicted.returncode == 0 and predicted.stdout.strip() == "42", predicted.stderr
    finally:
        delete("cli-slow-start")


def test_dashboard_rest_api_lists_a_deployed_model(deployed_cli, cluster):
    from lambdaml.cluster.ray_internals import dashboard_headers

    applications = httpx.get(f"{cluster.dashboard_url}/api/serve/applications/", headers=dashboard_headers(),
                             timeout=30).json()["applications"]
    assert applications["cli-shout"]["status"] == "RUNNING"
    assert applications["cli-shout"]["route_prefix"] == "/cli-shout"


def test_unchanged_code_deployed_from_two_processes_keeps_its_version_and_replicas(cluster, tmp_path):
    source = tmp_path / "steady.py"
    source.write_text(textwrap.dedent("""
        import os
        from lambdaml import Input, model

        @model(name="cli-steady", cpu=0.1, min=1)
        class Steady:
            def setup(self) -> None:
                self.pid = os.getpid()

            def predict(self, word: str = Input(default="hi", description="Any word")) -> int:
                return self.pid
        """))
    try:
        pids, versions = [], []
        for seed in ("1", "2"):  # set and class-id order differ between processes: the version must not
            env = {**os.environ, "PYTHONHASHSEED": seed}
            deployed = subprocess.run([sys.executable, "-m", "lambdaml.cli", "deploy", str(source)], env=env,
                                      capture_output=True, text=True, timeout=300)
            assert deployed.returncode == 0, deployed.stderr
            versions.append([row.version for row in lambdaml.versions("cli-steady")])
            pids.append(lambdaml.run("cli-steady", {}))
        assert len(versions[1]) == 1 and versions[0] == versions[1]
        assert pids[0] == pids[1]  # the second deploy left the running replica alone
    finally:
        delete("cli-steady")


def test_mistakes_get_one_line_that_says_what_is_wrong(cluster, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from lambdaml import model\n\n@model\ndef f(x: int) -> int\n    return x\n")
    code, output = cli("deploy", str(broken))
    assert code == 1 and f"{broken}, line 4: SyntaxError" in output and "Traceback" not in output
    missing = tmp_path / "missing_import.py"
    missing.write_text("import lambdaml\nimport no_such_module_anywhere\n")
    code, output = cli("deploy", str(missing))
    assert code == 1 and "line 2: ModuleNotFoundError" in output and len(output.strip().splitlines()) == 1
    code, output = cli("rollback", "no-such-model")
    assert code == 1 and "No model named 'no-such-model'" in output
