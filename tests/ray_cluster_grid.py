"""Run by tests/test_grid.py inside a loopback-only network namespace: a two-node Ray cluster on this
machine (ray.cluster_utils.Cluster, one core and two logical GPUs a node), reproduce_paper.py's grid
given on the command line spread over it, and the second node removed as soon as a run has started
there. Prints one JSON line: the job whose node was removed, and the driver's exit code."""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import reproduce_paper  # noqa: E402


def remove_when_a_run_starts_on(cluster, node, jobs, removed):
    while True:
        for path in jobs.glob("train-*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if "ended" not in record and record["where"].endswith(f"(Ray node {node.node_id[:8]})"):
                cluster.remove_node(node)
                removed.append(record["key"])
                return
        time.sleep(0.05)


def main(argv):
    out = Path(argv[argv.index("--output_dir") + 1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2})
    second = cluster.add_node(num_cpus=1, num_gpus=2)
    ray.init(address=cluster.address)
    removed = []
    threading.Thread(target=remove_when_a_run_starts_on, args=(cluster, second, out / "launch" / "jobs", removed),
                     daemon=True).start()
    code = reproduce_paper.main(argv)
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"removed": removed, "code": code}))


if __name__ == "__main__":
    main(sys.argv[1:])
