"""Connecting to Ray: an existing cluster (``ray.address`` / ``RAY_ADDRESS``) or a local one."""

from __future__ import annotations

import logging
import os

from knd.config.schema import RayConfig
from knd.runtime.console import is_verbose, out, quiet_ray, ray_init_options

log = logging.getLogger(__name__)


TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.25"
"""How often Ray Train's controller polls its workers on a local Ray (Ray's default: 2 s). A
worker's epoch report is collected only at a poll, so a small model's 0.2-s epochs took seconds
each: 15 epochs of egemaps_linear on 1,200 clips ran 106 s with Ray's default and 65 s with
this, with the same figures. A cluster sets it in its own environment (docs/guides/cluster.md)."""


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once per process; a session that is already up is reused.

    Inside ``ray job submit`` Ray sets ``RAY_ADDRESS``, so ``ray.init()`` joins that cluster.
    Ray's own logs stay in its log files unless ``cfg.verbose`` or ``KND_VERBOSE=1``
    (:mod:`knd.runtime.console`).
    """
    import ray

    if ray.is_initialized():
        return
    verbose = is_verbose(cfg.verbose)
    options = ray_init_options(verbose)
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        out(f"  joining Ray cluster at {address}")
        ray.init(address=address, **options)
    else:
        # "local", not None: ray.init() would otherwise join whatever cluster the last
        # `ray start` on this machine left behind, and the contract is "no address, local Ray".
        # The local Ray's processes inherit this environment: a value the user set wins.
        os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, **options)
    quiet_ray(verbose)
