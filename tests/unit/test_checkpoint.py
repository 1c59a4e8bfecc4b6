"""Checkpoint folders round-trip, and loading refuses files that would run code when unpickled."""

from __future__ import annotations

import json
import os

import pytest
import torch
from samples import checkpoint_meta
from torch import nn

from knd.learning.checkpoint import (
    MODEL_FILE,
    TRAIN_STATE_FILE,
    load_meta,
    load_model,
    load_train_state,
    save_checkpoint,
)
from knd.learning.models import build_model


def _meta(width: int = 8) -> dict:
    return checkpoint_meta(width) | {
        "epoch": 3,
        "metrics": {"val_uar": 0.5},
    }


class _Wrapped(nn.Module):
    """Stands in for DDP's attribute layout (``.module``), which prefixes every key."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.module = inner


def test_round_trip_gives_the_same_predictions_and_meta(tmp_path):
    torch.manual_seed(0)
    model = build_model("cpu_small", 8, width=8).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 64, 100)).sum().backward()
    optimizer.step()
    state = {"epoch": 3, "step": 30, "optimizer": optimizer.state_dict(), "history": [1, 2, 3]}
    save_checkpoint(str(tmp_path / "ckpt"), _Wrapped(model), _meta(), train_state=state)

    loaded, meta = load_model(str(tmp_path / "ckpt"))
    x = torch.randn(3, 1, 64, 100)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training
    assert meta == _meta()
    assert load_meta(str(tmp_path / "ckpt"))["groups"] == {"logmel": "abc123"}
    resumed = load_train_state(str(tmp_path / "ckpt"))
    assert resumed["epoch"] == 3 and resumed["history"] == [1, 2, 3]
    fresh = torch.optim.AdamW(build_model("cpu_small", 8, width=8).parameters(), lr=1e-3)
    fresh.load_state_dict(resumed["optimizer"])  # optimiser state loads back without pickle


def test_train_state_is_optional(tmp_path):
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), _meta())
    assert not (tmp_path / TRAIN_STATE_FILE).exists()
    assert load_train_state(str(tmp_path)) is None


def test_missing_folder_and_mismatched_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_model(str(tmp_path / "nowhere"))
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), _meta())
    meta = _meta(width=16)  # meta now describes a wider model than the saved weights
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit model 'cpu_small'"):
        load_model(str(tmp_path))


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling calls ``os.mkdir(marker)``, i.e. runs code from the file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_bearing_model_file_is_refused_and_its_code_never_runs(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(str(folder), build_model("cpu_small", 8, width=8), _meta())
    marker = tmp_path / "code-ran"
    payload = {"features.0.weight": _RunsCodeWhenUnpickled(str(marker))}
    torch.save(payload, folder / MODEL_FILE)

    with pytest.raises(ValueError, match="refused to load"):
        load_model(str(folder))
    assert not marker.exists()

    # The payload is real: an unrestricted load would have run it.
    torch.load(folder / MODEL_FILE, weights_only=False)
    assert marker.exists()


def test_a_pickle_bearing_train_state_is_refused(tmp_path):
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), _meta())
    torch.save({"epoch": _RunsCodeWhenUnpickled(str(tmp_path / "x"))}, tmp_path / TRAIN_STATE_FILE)
    with pytest.raises(ValueError, match="refused to load"):
        load_train_state(str(tmp_path))
    assert not (tmp_path / "x").exists()
