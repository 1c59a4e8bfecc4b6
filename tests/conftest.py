"""Fixtures shared by every test tier. Heavy fixtures are session-scoped and built lazily."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole test session (2 CPUs, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
