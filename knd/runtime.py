"""Connecting to Ray: an existing cluster (``ray.address`` / ``RAY_ADDRESS``) or a local one."""

from __future__ import annotations

import logging
import os

from knd.config import RayConfig

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once per process; a session that is already up is reused.

    Inside ``ray job submit`` Ray sets ``RAY_ADDRESS``, so ``ray.init()`` joins that cluster.
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        # "local", not None: ray.init() would otherwise join whatever cluster the last
        # `ray start` on this machine left behind, and the contract is "no address, local Ray".
        ray.init(
            address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True
        )
    # Ray Data's own progress bars would interleave with ours and the log lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
