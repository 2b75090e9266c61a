"""The embedded cluster's long-lived driver: owns Ray Serve and keeps workers warm.

Ray starts each Serve replica in a worker process of the Serve controller's
job, reusing an idle worker of that job when one exists and otherwise starting
a new Python process (~1.5 s here, most of a cold start). Ray only keeps idle
workers for jobs whose driver is alive, so the embedded cluster runs this
driver: it starts Serve (its job becomes the controller's job) and runs a few
no-op tasks every half second, which makes Ray keep that many idle, preloaded
workers ready for the next replica. Started by ``lambdaml.cluster.start``;
ended with the cluster.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--warm-workers", type=int, default=2)
    parser.add_argument("--temp-dir", required=True, help="marks this process as part of the cluster")
    parser.add_argument("--node-types", help="JSON file of the node types a simulated cluster can add")
    args = parser.parse_args()

    import ray
    from ray import serve

    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False, namespace="lambdaml")
    # One ingress, on the head: a simulated cluster's nodes all share 127.0.0.1 and its ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.http_port})
    if args.node_types:
        from lambdaml._node_types import publish

        publish(json.loads(Path(args.node_types).read_text()))

    @ray.remote(num_cpus=0)
    def keep_warm() -> None:
        return None

    while True:
        ray.get([keep_warm.remote() for _ in range(args.warm_workers)])
        time.sleep(0.5)


if __name__ == "__main__":
    main()
