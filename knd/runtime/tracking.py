"""Experiment tracking with Weights & Biases, kept out of the way.

- Only one process logs (rank 0 of a worker group); every other caller gets a no-op tracker.
- ``mode`` is ``offline`` unless ``WANDB_MODE`` or ``WANDB_API_KEY`` is set in the environment,
  so a run never needs wandb's servers. ``wandb.enabled=false`` never imports wandb at all, nor
  does ``WANDB_MODE=disabled`` (wandb's own off switch: importing wandb costs a process about
  half a second, only to log nothing).
- The API key is only ever read by wandb itself from the environment. Anything we hand to wandb
  or write to disk goes through :func:`scrub`, which masks the values of secret-looking
  environment variables, and a failing wandb never stops training.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from typing import Any

from knd.config.schema import WandbConfig
from knd.data import storage

log = logging.getLogger(__name__)

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASS|PWD|CREDENTIAL|PRIVATE|SIGNATURE|COOKIE|SESSION_ID", re.IGNORECASE
)
_NOT_SECRET = {"PWD", "OLDPWD"}  # the shell's working folders
MASK = "***"
MIN_SUBSTRING = 3
"""Secret values this long are masked wherever they occur in a string; shorter ones only where
a whole string equals them (masking every "a" of every message would make logs unreadable)."""


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else ``online`` given ``WANDB_API_KEY``, else ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def tracking_on(cfg: WandbConfig) -> bool:
    """Whether anything is logged: ``wandb.enabled`` and no ``WANDB_MODE=disabled``."""
    return cfg.enabled and wandb_mode() != "disabled"


def is_secret_name(name: str) -> bool:
    """Whether a variable or key named ``name`` holds a secret (``MY_PASS``, ``*_TOKEN``...)."""
    return name.upper() not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_name(k) and v}
    return sorted(values, key=len, reverse=True)


def scrub(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists/strings) with secrets masked.

    Masked: the values of secret-named environment variables (however short: inside strings
    from :data:`MIN_SUBSTRING` characters, else where a whole string equals one), and any string
    under a secret-named key (``{"password": "x"}``).
    """
    secrets = _secret_values()
    long = [x for x in secrets if len(x) >= MIN_SUBSTRING]
    short = {x for x in secrets if len(x) < MIN_SUBSTRING}

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            if v in short:
                return MASK
            for secret in long:
                v = v.replace(secret, MASK)
            return v
        if isinstance(v, dict):
            return {
                clean(k): MASK if isinstance(x, str) and x and is_secret_name(str(k)) else clean(x)
                for k, x in v.items()
            }
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return clean(obj)


class Tracker:
    """Logs metrics to a wandb run, or does nothing when there is none."""

    def __init__(self, run: Any = None):
        self._run = run

    @property
    def enabled(self) -> bool:
        return self._run is not None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log(scrub(metrics), step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def start_tracking(
    cfg: WandbConfig,
    folder: str,
    name: str,
    config: dict[str, Any],
    rank: int = 0,
    group: str | None = None,
) -> Tracker:
    """A tracker for this process: a wandb run on rank 0 when enabled, else a no-op.

    Args:
        cfg: the ``wandb`` config section.
        folder: the run folder; wandb's files go under ``<folder>/wandb`` (a local temporary
            folder when ``folder`` is on S3, since wandb writes only to local disk).
        name: run name shown in wandb.
        config: the run's configuration (scrubbed of secrets before wandb sees it).
        rank: the caller's worker rank; only rank 0 logs.
        group: wandb group (e.g. a Tune experiment).
    """
    if not tracking_on(cfg) or rank != 0:
        return Tracker(None)
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; tracking is off for run %s", name)
        return Tracker(None)
    local = tempfile.mkdtemp(prefix="knd-wandb-") if storage.is_remote(folder) else folder
    os.makedirs(local, exist_ok=True)
    mode = wandb_mode()
    try:
        run = wandb.init(
            project=cfg.project,
            name=name,
            group=group,
            dir=local,
            mode=mode,
            config=scrub(config),
            settings=wandb.Settings(silent=True, console="off"),
        )
    except Exception as e:  # a tracking outage must not stop training
        log.warning("wandb (%s) did not start, tracking is off: %s", mode, type(e).__name__)
        return Tracker(None)
    log.info("wandb run %s (%s) logging to %s", name, mode, local)
    return Tracker(run)


def wandb_callbacks(cfg: WandbConfig, experiment: str) -> list:
    """Ray Tune's callbacks that log every trial of ``experiment`` to wandb (none if disabled).

    The trials' ``actors`` (the list of actors each was given) is left out of wandb's tables.
    """
    if not tracking_on(cfg):
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = wandb_mode()
    if mode == "offline":
        # Ray's callback otherwise insists on an API key before it knows the mode.
        os.environ.setdefault("WANDB_MODE", "offline")
    # wandb writes its files locally: beside a local experiment, else in a temporary folder.
    folder = tempfile.mkdtemp(prefix="knd-wandb-") if storage.is_remote(experiment) else experiment
    log.info("wandb (%s) logs every trial to project %s", mode, cfg.project)
    return [
        WandbLoggerCallback(
            project=cfg.project,
            group=experiment.rstrip("/").rsplit("/", 1)[-1],
            excludes=["actors"],
            mode=mode,
            dir=folder,
        )
    ]
