"""What ``knd train``'s driver hands its Ray Train workers: one typed, picklable object."""

from __future__ import annotations

import json
import pickle

from knd.config.loading import load_config
from knd.stages.train import LoopConfig, TrainHooks


def test_the_loop_config_pickles_and_reads_its_groups_and_resume_from_the_config():
    cfg = load_config(
        "train", ["data=d", "model.name=fused_cnn", "model.groups=[logmel,egemaps]", "resume=r"]
    )
    meta = {"labels": ["a", "b"], "norm": {"mean": [0.0] * 4096, "std": [1.0] * 4096}}
    loop = LoopConfig(cfg, meta, 12, 4, True, False, (-1, *range(8)), "/runs/x", "x")
    again = pickle.loads(pickle.dumps({"loop": loop}))["loop"]
    assert again == loop and isinstance(again.hooks, TrainHooks)
    assert again.groups == ("logmel", "egemaps") and again.resume == "r"
    # Ray Train records train_loop_config with str() of what JSON cannot hold: the statistics
    # stay out of it.
    assert "4096" not in repr(loop) and "mean" not in repr(loop)
    json.dumps({"loop": str(loop)})
