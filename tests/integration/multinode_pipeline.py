"""prepare -> train (2 workers) -> score on a local two-node Ray cluster, everything on ``s3://``.

Run by ``test_multinode.py`` in a process of its own (a cluster of ``ray.cluster_utils`` cannot
share a process with the test session's ``ray.init``). Each node has one CPU, so two prepare
tasks, two training workers and two scoring actors can only run by using both nodes. Prints one
JSON line of results; the cluster's processes are stopped by ``Cluster.shutdown`` (never
``ray stop``, which would stop every Ray on the machine).

    python tests/integration/multinode_pipeline.py s3://bucket/prefix
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")


def main(prefix: str) -> int:
    import ray
    from ray.cluster_utils import Cluster

    from knd.config import load_config
    from knd.prepare import run as prepare
    from knd.score import run as score
    from knd.train import run as train

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        nodes = [n for n in ray.nodes() if n["Alive"]]
        at = [f"ray.address={cluster.address}"]
        data = [f"input={prefix}/audio", f"output={prefix}/features", "batch_size=4", *at]
        prepared = prepare(load_config("prepare", data))
        trained = train(
            load_config(
                "train",
                [
                    f"data={prefix}/features", f"run_dir={prefix}/runs", "name=two-nodes",
                    "recipe=cpu_small", "optim.epochs=1", "train.num_workers=2",
                    "wandb.enabled=false", "split.test_actors=[1]", "split.val_actors=[2]", *at,
                ],
            )
        )  # fmt: skip
        scored = score(
            load_config(
                "score",
                [
                    f"checkpoint={trained.checkpoint}", f"input={prefix}/audio",
                    f"output={prefix}/scores.parquet", "num_actors=2", *at,
                ],
            )
        )  # fmt: skip
        print(
            json.dumps(
                {
                    "nodes": len(nodes),
                    "prepared_rows": prepared.num_rows,
                    "rejected": prepared.num_rejected,
                    "shards": prepared.manifest["shards"],
                    "checkpoint": trained.checkpoint,
                    "test_n": trained.metrics["test"]["n"],
                    "scored": scored.num_files,
                    "failed": scored.failed,
                    "output": scored.output,
                }
            ),
            flush=True,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
