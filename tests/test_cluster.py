"""The embedded cluster: loopback only, reused across processes, stopped without leftovers."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lambdaml import cluster as lambdaml_cluster
from lambdaml import model
from lambdaml.cluster.head import _cluster_processes
from lambdaml._settings import cluster_settings


def _listening_sockets() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket, from `ss`."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in output.splitlines():
        fields = line.split()
        local = fields[3]
        for part in line.split("pid=")[1:]:
            sockets.append((local, int(part.split(",")[0])))
    return sockets


@model(name="listening", cpu=0.1, min=1, max=1)
def listening() -> str:
    return "here"


def test_every_cluster_listener_is_on_loopback(cluster, deployed):
    deployed(listening)  # a model's replica too, beside the control application's (its gRPC server included)
    settings = cluster_settings()
    state = json.loads((settings.temp_dir / "lambdaml-cluster.json").read_text())
    pids = set(_cluster_processes(settings.temp_dir, state["supervisor_pid"]))
    ours = [(local, pid) for local, pid in _listening_sockets() if pid in pids]
    assert any(local.endswith(f":{settings.http_port}") for local, _ in ours), "the HTTP ingress is not listening"
    exposed = [(local, pid) for local, pid in ours if not local.rsplit(":", 1)[0].strip("[]").endswith("127.0.0.1")]
    assert exposed == [], f"listeners not on 127.0.0.1: {exposed}"


def test_the_dashboard_and_the_gcs_answer_only_to_holders_of_the_cluster_token(cluster):
    """Ray's token authentication: another local user reaches the ports, not this user's private folder."""
    from lambdaml.cluster.ray_internals import dashboard_headers

    url = f"{cluster.dashboard_url}/api/serve/applications/"
    assert httpx.get(url, headers=dashboard_headers(), timeout=30).status_code == 200
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64}, timeout=30).status_code == 403
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert token.parent == cluster_settings().temp_dir and token.stat().st_mode & 0o777 == 0o600
    guesser = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(token.parent / "no-such-token")}
    code = f"import ray; ray.init(address={cluster.address!r}); print('connected')"
    output = subprocess.run([sys.executable, "-c", code], env=guesser, capture_output=True, text=True, timeout=120)
    assert output.returncode != 0 and "connected" not in output.stdout


def test_another_process_reuses_the_running_cluster(cluster):
    code = "import lambdaml.cluster as c; print(c.start().supervisor_pid)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(output.stdout.strip()) == cluster.supervisor_pid


def test_leaving_the_cluster_stops_the_thread_handles_ran_on(cluster, deployed):
    """A Ray call from that thread while Ray shuts down would end the caller with exit status 1."""
    deployed(listening)
    code = (
        "import threading, lambdaml, lambdaml.cluster as c\n"
        "print(lambdaml.run('listening'), c.call_app('listening', 'health'))\n"
        "c._disconnect()\n"
        "print([t.name for t in threading.enumerate() if 'router_event_loop' in t.name])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"


def test_shutdown_leaves_no_process_and_frees_the_ports(cluster, tmp_path_factory, monkeypatch):
    """A second embedded cluster, on ports of its own, started and stopped."""
    from lambdaml.cluster.head import free_port

    temp_dir = f"/tmp/lmt-stop-{free_port()}"
    ports = {name: str(free_port()) for name in ("LAMBDAML_RAY_PORT", "LAMBDAML_HTTP_PORT", "LAMBDAML_DASHBOARD_PORT")}
    monkeypatch.setenv("LAMBDAML_TEMP_DIR", temp_dir)
    for name, port in ports.items():
        monkeypatch.setenv(name, port)
    info = lambdaml_cluster.start()
    settings = cluster_settings()
    try:
        assert httpx.get(f"{info.http_url}/-/routes", timeout=30).status_code in (200, 503)  # the ingress answers
        assert _cluster_processes(settings.temp_dir, info.supervisor_pid)
    finally:
        assert lambdaml_cluster.shutdown() is True
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert _cluster_processes(settings.temp_dir, info.supervisor_pid) == []
    ports_in_use = {local.rsplit(":", 1)[1] for local, _ in _listening_sockets()}
    assert not ports_in_use & set(ports.values())
    assert lambdaml_cluster.shutdown() is False


def test_an_address_connects_to_that_cluster_instead(cluster):
    """LAMBDAML_ADDRESS (here the session's own head, by address) is used as given."""
    from lambdaml import model

    @model(name="addressed", cpu=0.1, min=1, max=1)
    def addressed(x: int) -> int:
        return x + 1

    addressed.deploy()
    try:
        settings = cluster_settings()
        env = {
            **__import__("os").environ,
            "LAMBDAML_ADDRESS": f"127.0.0.1:{settings.ray_port}",
            "LAMBDAML_URL": cluster.http_url,
            "LAMBDAML_TEMP_DIR": "/tmp/lmt-not-used",  # would start a new cluster if the address were ignored
            # What a user connecting to a token-protected cluster sets, as for any Ray client (docs/cluster.md).
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(cluster_settings().temp_dir / "ray-auth-token"),
        }
        code = (
            "import lambdaml, lambdaml.cluster as c\n"
            "info = c.connect(); assert not info.embedded, info\n"
            "print(lambdaml.run('addressed', {'x': 1}), lambdaml.Model.__name__)\n"
            "from lambdaml.client import predict_remote; print(predict_remote('addressed', {'x': 2}))\n"
        )
        output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert output.returncode == 0, output.stderr[-2000:]
        assert output.stdout.split() == ["2", "Model", "3"]
    finally:
        addressed.delete()


def test_free_ports_are_never_handed_out_twice():
    from lambdaml.cluster.head import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_cluster_owns_the_processes_of_its_dir_not_of_a_longer_named_one(tmp_path):
    ours, neighbour = tmp_path / "x-123", tmp_path / "x-1234"
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(path)])
                for path in (ours / "session" / "raylet.out", neighbour / "session", ours)]
    try:
        found = _cluster_processes(ours, None)
        assert sleepers[0].pid in found and sleepers[2].pid in found  # a path inside it, and the dir itself
        assert sleepers[1].pid not in found  # /x-1234 merely starts with /x-123
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def test_the_cluster_folder_is_private_and_another_users_is_refused(tmp_path, monkeypatch):
    from lambdaml.cluster.head import private_dir
    from lambdaml.errors import ClusterError

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert private_dir(loose).stat().st_mode & 0o777 == 0o700
    assert private_dir(tmp_path / "new" / "dir").stat().st_mode & 0o777 == 0o700
    if os.getuid() != 0:
        pytest.skip("making a folder of another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    monkeypatch.setenv("LAMBDAML_TEMP_DIR", str(theirs))
    with pytest.raises(ClusterError, match="belongs to another user"):
        lambdaml_cluster.start()


_OTHER_SETTINGS_PROBE = '''
import json, os, subprocess, time
import httpx
from lambdaml import cluster, model
from lambdaml.cluster.ray_internals import raylet_stub, unclaimed_workers
from lambdaml.deploy import app_status

@model(name="other-settings", cpu=0.1, min=0, max=1, scaledown_after=1)
def where() -> int:
    return os.getpid()

info = cluster.connect()  # starts this process's own cluster, with the settings of its environment
try:
    where.deploy()
    processes = subprocess.run(["ps", "-eo", "comm=,args="], capture_output=True, text=True).stdout.splitlines()
    rounds = []
    for _ in range(2):
        deadline = time.monotonic() + 60
        while app_status("other-settings")["replicas"] and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(5)  # time enough for a keeper to top its pool up (tests/test_warm_workers.py waits for it)
        ready = list(unclaimed_workers(raylet_stub()))
        answer = httpx.post(f"{info.http_url}/other-settings/predictions", json={"input": {}}, timeout=120)
        rounds.append({"ready": ready, "status": answer.status_code, "pid": answer.json().get("output")})
    haproxy = [p for p in processes if p.startswith("haproxy") and os.environ["LAMBDAML_TEMP_DIR"] in p]
    print(json.dumps({"haproxy": haproxy, "rounds": rounds}))
finally:
    cluster.shutdown()
'''


def test_a_cluster_with_the_python_proxy_and_no_warm_workers(cluster, tmp_path):
    """LAMBDAML_INGRESS=python and LAMBDAML_WARM_WORKERS=0, on one second cluster to pay for one start.

    With the keeper off, nothing is left ready after a scale to zero: the control run of
    tests/test_warm_workers.py, where a ready worker is always there.
    """
    from lambdaml.cluster.head import free_port

    probe = tmp_path / "probe.py"
    probe.write_text(_OTHER_SETTINGS_PROBE)
    env = {**os.environ, "LAMBDAML_INGRESS": "python", "LAMBDAML_WARM_WORKERS": "0",
           "LAMBDAML_TEMP_DIR": f"/tmp/lmt-other-{free_port()}", "LAMBDAML_DATABASE_URL": f"sqlite:///{tmp_path}/records.db"}
    env.update({name: str(free_port()) for name in ("LAMBDAML_RAY_PORT", "LAMBDAML_HTTP_PORT", "LAMBDAML_DASHBOARD_PORT")})
    try:
        result = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, timeout=400)
    finally:
        shutil.rmtree(env["LAMBDAML_TEMP_DIR"], ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["haproxy"] == []  # Ray's Python proxy answers instead
    assert [r["status"] for r in report["rounds"]] == [200, 200]
    assert all(r["ready"] == [] and r["pid"] for r in report["rounds"])
