"""Train's data plane: the prepared feature shards as a Ray Dataset.

The shard format itself (schema, manifest, in-memory reads) is :mod:`knd.data.shards`'s, which
never imports Ray; this module is where Ray Data meets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ray

from knd.data.shards import checked_manifest, expected_groups, shard_paths, to_numpy_batch


def read_features(
    path: str,
    actors: Iterable[int] | None = None,
    expected_hash: str | None = None,
    groups: Iterable[str] | dict[str, str | None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A Ray Dataset over the committed shards of a prepared feature set, and its manifest.

    Args:
        path: the ``output`` of ``knd prepare`` (folder or ``s3://``).
        actors: keep only these actors (None: all).
        expected_hash: refuse features whose log-mel ``feature_hash`` differs.
        groups: feature groups to read besides the log-mel, as names or ``{name: hash}`` (a
            hash refuses the group when it differs).

    Returns:
        ``(dataset, manifest)``; the dataset's ``features`` column holds float32 arrays
        ``[n_mels, n_frames]``, and each other group a float32 column named after it.

    Raises:
        ValueError: no manifest, a missing group, or features made with other parameters.
    """
    manifest, specs = checked_manifest(path, expected_groups(groups, expected_hash))
    fs, files = shard_paths(path, manifest)
    wanted = None if actors is None else tuple(int(a) for a in actors)
    ds = ray.data.read_parquet(files, filesystem=fs)
    ds = ds.map_batches(
        to_numpy_batch,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"specs": specs, "actors": wanted},
    )
    return ds, manifest
