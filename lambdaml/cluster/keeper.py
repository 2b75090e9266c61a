"""The embedded cluster's long-lived driver: owns Ray Serve and keeps workers ready.

It puts the artifact signing key into the cluster, starts Serve on loopback, publishes a simulated cluster's node types, then
keeps ``--warm-workers`` unclaimed worker processes ready on the head so a
replica starts without waiting for a new Python process (see
``lambdaml.cluster.warm_workers``). Started by ``lambdaml.cluster.start``; ended with
the cluster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--warm-workers", type=int, default=2)
    parser.add_argument("--temp-dir", required=True, help="marks this process as part of the cluster")
    parser.add_argument("--node-types", help="JSON file of the node types a simulated cluster can add")
    parser.add_argument("--signing-key-file", required=True, help="the key artifacts are signed with (lambdaml._signing)")
    args = parser.parse_args()

    import ray
    from ray import serve

    context = ray.init(address=args.address, logging_level="ERROR", log_to_driver=False, namespace="lambdaml")
    from lambdaml._signing import install_key_file

    install_key_file(Path(args.signing_key_file))  # before anything deploys: models restored at `up` are signed with it
    # One ingress, on the head: a simulated cluster's nodes all share 127.0.0.1 and its ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.http_port})
    if args.node_types:
        from lambdaml.cluster.node_types import publish

        publish(json.loads(Path(args.node_types).read_text()))

    from lambdaml.control.app import ensure_running

    # The records API answers at /v1, and the pages at /ui, from the start, models or not.
    ensure_running(links={"dashboard": f"http://{context.dashboard_url}"})

    from lambdaml.cluster.ray_internals import raylet_stub
    from lambdaml.cluster.warm_workers import WarmPool

    WarmPool(raylet_stub(), args.warm_workers).run_forever()


if __name__ == "__main__":
    main()
