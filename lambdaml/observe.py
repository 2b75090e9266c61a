"""The observe stage, from outside: what is deployed, how its replicas are doing, their logs.

Everything here reads Ray's public interfaces: the dashboard's Serve REST API
(``/api/serve/applications/``, the same data as the dashboard's Serve view),
Ray's state API for logs, the artifact store for versions, and the records (through the control
application) for figures over time. The CLI's ``ls``, ``status`` and ``logs`` commands print what
these functions return.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from lambdaml import cluster
from lambdaml._installs import pip_errors
from lambdaml.placement import cluster_shape, unschedulable_reason
from lambdaml._settings import CONTROL_APP
from lambdaml.artifacts import ArtifactStore
from lambdaml.errors import ClusterError, NotDeployedError

_PENDING_STATES = ("PENDING_ALLOCATION", "PENDING_INITIALIZATION", "STARTING")


@dataclass
class ReplicaInfo:
    id: str
    state: str
    node_ip: str | None = None
    pid: int | None = None
    actor_id: str | None = None
    node_id: str | None = None
    log_file: str | None = None


@dataclass
class ModelInfo:
    """One row of ``lambdaml ls``."""

    name: str
    status: str
    version: str
    running: int
    target: int
    url: str
    message: str = ""
    replicas: list[ReplicaInfo] = field(default_factory=list)
    required_resources: dict[str, float] = field(default_factory=dict)
    installs: list[str] = field(default_factory=list)  # what a new replica installs first (pip runtime_env)


def serve_details() -> dict[str, Any]:
    """The dashboard's view of every Serve application (its REST API)."""
    from lambdaml.cluster.ray_internals import dashboard_headers

    info = cluster.connect(start_embedded=False)
    try:
        response = httpx.get(f"{info.dashboard_url}/api/serve/applications/", headers=dashboard_headers(), timeout=30)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ClusterError(f"The Ray dashboard at {info.dashboard_url} did not answer: {exc}") from None
    return response.json()


def _store_or_none() -> ArtifactStore | None:
    try:
        return ArtifactStore()
    except Exception:  # a store this machine cannot reach: versions are left blank
        return None


def _model_info(name: str, app: dict[str, Any], http_url: str, store: ArtifactStore | None) -> ModelInfo:
    deployments = list(app.get("deployments", {}).values())
    replicas = [
        ReplicaInfo(
            id=r["replica_id"], state=r["state"], node_ip=r.get("node_ip"), pid=r.get("pid"),
            actor_id=r.get("actor_id"), node_id=r.get("node_id"), log_file=r.get("log_file_path"),
        )
        for d in deployments
        for r in d.get("replicas", [])
    ]
    messages = [app.get("message") or ""] + [d.get("message") or "" for d in deployments]
    version = ""
    if store is not None:
        try:
            version = store.current_version(name) or ""
        except OSError:
            version = ""
    return ModelInfo(
        name=name,
        status=app.get("status", "UNKNOWN"),
        version=version,
        running=sum(r.state == "RUNNING" for r in replicas),
        target=sum(d.get("target_num_replicas") or 0 for d in deployments),
        url=f"{http_url}{app.get('route_prefix') or '/' + name}",
        message="\n".join(m for m in messages if m),
        replicas=replicas,
        required_resources=deployments[0].get("required_resources", {}) if deployments else {},
        installs=_pip_packages(deployments[0]) if deployments else [],
    )


def _pip_packages(deployment: dict[str, Any]) -> list[str]:
    options = (deployment.get("deployment_config") or {}).get("ray_actor_options") or {}
    return list(((options.get("runtime_env") or {}).get("pip") or {}).get("packages") or [])


def start_failure(message: str) -> str | None:
    """What Serve's "failed to start N times" message says went wrong, in a line: pip's errors
    for a package that would not install, else the exception's last line; None for other messages."""
    if "failed to start" not in message:
        return None
    if "ERROR:" in message:
        return "installing its packages failed: " + pip_errors(message).replace("\n", " ")
    raised = [line.strip() for line in message.splitlines() if re.match(r"^\s*[\w.]+(Error|Exception)\b.*:", line)]
    return raised[-1] if raised else message.splitlines()[-1].strip()


def list_models() -> list[ModelInfo]:
    """Every application on the cluster with its version, replica counts and URL."""
    info = cluster.connect(start_embedded=False)
    store = _store_or_none()
    applications = serve_details().get("applications", {})
    return [
        _model_info(name, app, info.http_url, store)
        for name, app in sorted(applications.items())
        if name != CONTROL_APP  # lambdaml's own records application, not a model
    ]


def model_info(name: str) -> ModelInfo:
    info = cluster.connect(start_embedded=False)
    app = serve_details().get("applications", {}).get(name)
    if app is None:
        raise NotDeployedError(f"No model named {name!r} is deployed on this cluster (see `lambdaml ls`).")
    return _model_info(name, app, info.http_url, _store_or_none())


def pending_reason(needs: dict[str, float], installs: list[str] = ()) -> str:
    """Why a replica that needs ``needs`` (and installs ``installs`` first) is not running yet, in plain words."""
    import ray

    cluster.connect(start_embedded=False)
    if unschedulable_reason(needs, [ray.available_resources()]) is None:  # there is room: it is starting
        if installs:
            return f"starting: installing {', '.join(installs)} (the first replica; later ones reuse the install)"
        return "starting: loading its code and running setup()"
    wanted = ", ".join(f"{name}={amount:g}" for name, amount in needs.items() if amount)
    if "GPU" in needs or any(name.startswith("accelerator_type:") for name in needs):
        gpu = next((n.split(":", 1)[1] for n in needs if n.startswith("accelerator_type:")), "GPU")
        what = f"a node with {needs.get('GPU', 1):g} {gpu}"
    else:
        what = f"room for {wanted}"
    shape = cluster_shape()
    if unschedulable_reason(needs, shape.nodes) is not None:
        adding = [name for name, node in shape.node_types.items() if unschedulable_reason(needs, [node["resources"]]) is None]
        if adding:
            return f"waiting for {what}: the autoscaler is adding one (node type {adding[0]!r})"
        return f"waiting for {what}: the cluster has none; the autoscaler may add one"
    return f"waiting for {what}: every node that has it is busy; it starts when one frees up"


def status(name: str) -> dict[str, Any]:
    """``lambdaml status``: the model, its replicas, why any are pending, and recent errors."""
    model = model_info(name)
    failure = start_failure(model.message)
    errors, pending = [], []
    if failure is not None:  # Serve gave up starting replicas: that is the whole story
        errors.append(f"{name} cannot start a replica: {failure}. Fix it and deploy again.")
    elif model.message and model.status != "RUNNING":
        errors.append(model.message)
    elif any(r.state in _PENDING_STATES for r in model.replicas) or model.running < model.target:
        pending.append(pending_reason(model.required_resources, model.installs))
    if model.running:
        health = cluster.call_app(name, "health")
        if health["status"] == "SETUP_FAILED":
            errors.append(f"setup() failed: {health['setup']['error']}")
        errors += [f"{e['at']} prediction {e['id']}: {e['error']}" for e in health.get("recent_errors", [])]
    return {"model": model, "pending": pending, "errors": errors}


def figures(name: str, window: str = "1h") -> dict[str, Any]:
    """The model's figures over ``window`` (``1h`` or ``24h``) from its records: what its page's monitoring
    panel draws (``lambdaml.control.stats.model_series``: per-bucket ``points`` and ``totals``)."""
    return cluster.call_app(CONTROL_APP, "model_series", name, window, timeout_s=30)


STOPPED_REPLICAS_SHOWN = 3  # with none running, `logs` shows the replicas that stopped last
_STOPPED_REPLICAS_READ = 30  # per node, to find those: one short read each, however long the model has run
_LOG_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")  # Serve's log lines start with one


def logs(name: str, follow: bool = False, tail: int = 100) -> Iterator[str]:
    """Lines of the model's replica logs (Ray's state API), each prefixed with its replica id.

    With no replica running (scaled to zero, or stopped after a failure), the logs of the
    replicas that stopped last: Ray keeps their files on their nodes.
    """
    model = model_info(name)
    replicas = [r for r in model.replicas if r.node_id and r.log_file]
    if replicas:
        return read_logs(replicas, follow, tail)
    stopped = _stopped_replicas(name)
    if not stopped:
        raise NotDeployedError(f"{name!r} has no running replicas, and Ray has no logs of stopped ones.")
    note = (f"({name} has no running replica: these are the logs of the {len(stopped)} that stopped last; "
            "they end when the replica stopped)")
    return itertools.chain([note], read_logs(stopped, False, tail))


def _stopped_replicas(name: str) -> list[ReplicaInfo]:
    """Stopped replicas of ``name`` with log files on a live node, the last to write first."""
    import ray
    from ray.util.state import get_log, list_logs

    address = ray.get_runtime_context().gcs_address
    found: list[tuple[str, ReplicaInfo]] = []
    for node_id in [node["NodeID"] for node in ray.nodes() if node["Alive"]]:
        # Serve names them serve/replica_{app}_{deployment}_{replica id}.log; lambdaml's app and deployment are the model.
        listed = list_logs(address=address, node_id=node_id, glob_filter=f"serve/replica_{name}_{name}_*.log")
        for path in [f for files in listed.values() for f in files][:_STOPPED_REPLICAS_READ]:
            ending = "".join(get_log(address=address, node_id=node_id, filename=path, tail=20))
            last = max(_LOG_TIME.findall(ending), default="")
            replica_id = path.rsplit("_", 1)[1].removesuffix(".log")
            found.append((last, ReplicaInfo(id=replica_id, state="STOPPED", node_id=node_id, log_file=path)))
    found.sort(key=lambda item: item[0], reverse=True)
    return [replica for _, replica in found[:STOPPED_REPLICAS_SHOWN]]


def read_logs(replicas: list[ReplicaInfo], follow: bool = False, tail: int = 100) -> Iterator[str]:
    """Each replica's log read in a thread of its own (``follow`` never ends), merged as lines arrive."""
    import ray
    from ray.util.state import get_log, list_logs

    # This cluster's address, said explicitly: with none, Ray refuses when a second
    # Ray cluster runs on the machine ("Found multiple active Ray instances").
    address = ray.get_runtime_context().gcs_address
    lines: queue.Queue[str | Exception | None] = queue.Queue()

    def read(replica: ReplicaInfo) -> None:
        try:
            log_file = replica.log_file.lstrip("/")
            read_any = False
            for chunk in get_log(address=address, node_id=replica.node_id, filename=log_file, tail=tail, follow=follow):
                read_any = True
                for line in chunk.splitlines():
                    lines.put(f"[{replica.id}] {line}")
            # Ray 2.60 sometimes answers a missing file with an empty 200 (its agent's
            # "not found" travels in gRPC initial metadata, which a trailers-only reply
            # drops): an empty read is checked against the node's listing.
            if not read_any and not list_logs(address=address, node_id=replica.node_id, glob_filter=log_file):
                raise FileNotFoundError(f"the node has no file {log_file}")
        except Exception as exc:  # handed to the caller, not lost with this thread
            lines.put(ClusterError(f"Could not read the log of replica {replica.id}: {exc}"))
        finally:
            lines.put(None)

    for replica in replicas:
        threading.Thread(target=read, args=(replica,), daemon=True).start()
    remaining = len(replicas)
    while remaining:
        line = lines.get()
        if line is None:
            remaining -= 1
        elif isinstance(line, Exception):
            raise line
        else:
            yield line
