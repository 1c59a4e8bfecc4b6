"""``knd train`` and ``knd evaluate`` on the tiny corpus (8 actors) with a real local Ray.

One training run is made the hard way and shared by most tests: 2 DDP workers (gloo), test actors
1 and 2, validation actor 3; a hook records the actors of every training batch and SIGKILLs one
worker process once, in epoch 3, so Ray Train must restart the worker group from the epoch-2
checkpoint. Every check of learning, leakage, recovery, resuming and evaluation reads that run.
A second run (``spot``) is the default recipe's shape, no validation group, as a ``knd train``
process SIGKILLed after its first checkpoint and rerun: the driver-loss and no-validation checks
read it. (Each Ray Train run costs 15-20 s of start-up and teardown on 2 cores: runs are shared.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from knd.config.loading import load_config
from knd.stages.train import TrainHooks

pytestmark = pytest.mark.ray

TEST_ACTORS, VAL_ACTORS = (1, 2), (3,)
EPOCHS, KILL_EPOCH = 5, 3
# The Ray Train mechanics (DDP, kill and resume, synced metrics) on the recipe whose 5-epoch
# learning curve on 5 tiny actors is known; the default recipe's own run is the no-validation test.
TINY = [
    "recipe=cpu_small",
    "split.test_speakers=[1,2]",
    "split.val_speakers=[3]",
    "model.width=16",
    "optim.batch_size=32",
    "optim.lr=0.005",
    "augment.mixup_alpha=0",
    "optim.warmup_epochs=0.5",
    "wandb.enabled=false",
    "train.num_to_keep=2",
]


class RecordAndKill(TrainHooks):
    """Writes the actors of each training batch to a file; SIGKILLs its own worker once.

    Its state lives in files (the instance is pickled into every worker, and again on restart).
    """

    def __init__(self, folder: str, kill_epoch: int | None = None, kill_rank: int = 1):
        self.folder, self.kill_epoch, self.kill_rank = folder, kill_epoch, kill_rank

    def on_batch(self, epoch, index, rank, actors):
        line = f"{epoch} {index} " + " ".join(str(int(a)) for a in actors.tolist())
        with open(os.path.join(self.folder, f"actors-{rank}-{os.getpid()}.txt"), "a") as f:
            f.write(line + "\n")
        marker = os.path.join(self.folder, "killed")
        if epoch == self.kill_epoch and rank == self.kill_rank and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            # Ray Train collects each report at its next poll (every 2 s by default, 0.25 s in
            # this session: conftest.RAY_TRAIN_POLL_S): let the previous epoch's report be
            # taken first, as it would in any failure later than that.
            time.sleep(3)
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch, rank, metrics):
        with open(os.path.join(self.folder, "epochs.txt"), "a") as f:
            f.write(f"{epoch} {rank} {os.getpid()}\n")


# The hooks travel to Ray workers by pickle; this module is not importable there.
import ray.cloudpickle  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def clearly_above_chance(num_classes: int, n: int) -> float:
    """Chance plus four standard errors of a guesser's score on ``n`` clips: a model that learned
    nothing exceeds it about once in 30,000 runs. (A fixed 2.5x chance failed a sound run in CI:
    UAR 0.289 on 120 clips, whose standard error is about 0.04.)"""
    chance = 1 / num_classes
    return chance + 4 * (chance * (1 - chance) / n) ** 0.5


def train_cfg(features: str, run_dir: Path, name: str, *extra: str):
    return load_config(
        "train", [f"data={features}", f"run_dir={run_dir}", f"name={name}", *TINY, *extra]
    )


@pytest.fixture(scope="module")
def trained(tiny_features, ray_session, tmp_path_factory):
    """The shared run: 2 workers, killed once in epoch 3, finished from its checkpoint."""
    from knd.stages.train import run

    root = tmp_path_factory.mktemp("train")
    hooks_dir = root / "hooks"
    hooks_dir.mkdir()
    cfg = train_cfg(
        tiny_features, root / "runs", "main", f"optim.epochs={EPOCHS}", "train.num_workers=2"
    )
    result = run(cfg, hooks=RecordAndKill(str(hooks_dir), kill_epoch=KILL_EPOCH))
    return SimpleNamespace(
        cfg=cfg, result=result, root=root, hooks=hooks_dir, features=tiny_features
    )


def read_batches(hooks_dir: Path) -> list[tuple[int, int, int, int, list[int]]]:
    """(epoch, index, rank, pid, actors) of every recorded training batch."""
    out = []
    for path in hooks_dir.glob("actors-*.txt"):
        _, rank, pid = path.stem.split("-")
        for line in path.read_text().splitlines():
            epoch, index, *actors = (int(v) for v in line.split())
            out.append((epoch, index, int(rank), int(pid), actors))
    return out


def test_learns_well_above_chance_on_held_out_actors(trained):
    report = trained.result.metrics
    assert report["test_actors"] == list(TEST_ACTORS)
    assert report["train_actors"] == [4, 5, 6, 7, 8]
    test = report["test"]
    assert test["n"] == 120  # 60 clips per actor
    assert test["uar"] > clearly_above_chance(len(report["labels"]), test["n"]), test
    assert test["accuracy"] > clearly_above_chance(len(report["labels"]), test["n"]), test
    history = trained.result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # The run folder holds the report the CLI promises.
    run_dir = Path(trained.result.run_dir)
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["test"]["confusion"] == test["confusion"]
    assert (run_dir / "confusion.png").read_bytes().startswith(b"\x89PNG")
    # ...and the report a person reads: curves from every epoch, the exact config, one HTML file.
    assert (run_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    md = (run_dir / "report.md").read_text()
    assert "## Per emotion" in md and "## Per actor" in md and "## Learning curves" in md
    assert f"data: {trained.features}" in md
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    assert set(written["test"]["per_actor"]) == {"1", "2"}


def test_test_and_validation_actors_never_reach_a_training_batch(trained):
    batches = read_batches(trained.hooks)
    seen = {a for *_, actors in batches for a in actors}
    assert seen == {4, 5, 6, 7, 8}
    assert {rank for _, _, rank, _, _ in batches} == {0, 1}  # both DDP ranks trained
    # Each rank gets its own shard of every epoch: no clip position is counted twice per epoch.
    per_epoch = {}
    for epoch, _, _, pid, actors in batches:
        per_epoch.setdefault((epoch, pid), 0)
        per_epoch[(epoch, pid)] += len(actors)
    assert all(n <= 300 // 2 for n in per_epoch.values())


def test_a_killed_worker_resumes_from_its_checkpoint_without_repeating_epochs(trained):
    killed_pid = int((trained.hooks / "killed").read_text())
    history = trained.result.history
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    steps = [h["step"] for h in history]
    assert steps == [steps[0] * e for e in range(1, EPOCHS + 1)]  # the schedule carried on
    ends = [line.split() for line in (trained.hooks / "epochs.txt").read_text().splitlines()]
    by_epoch: dict[int, set[int]] = {}
    for epoch, _, pid in ends:
        by_epoch.setdefault(int(epoch), set()).add(int(pid))
    assert sorted(by_epoch) == list(range(1, EPOCHS + 1))
    before = by_epoch[1] | by_epoch[KILL_EPOCH - 1]
    after = by_epoch[KILL_EPOCH] | by_epoch[EPOCHS]
    assert killed_pid in before and not before & after  # a new worker group finished the run
    # The killed worker had started epoch 3 before it died: that epoch was redone, not skipped.
    batches = read_batches(trained.hooks)
    assert any(e == KILL_EPOCH and pid == killed_pid for e, _, _, pid, _ in batches)
    assert trained.result.best_epoch in range(1, EPOCHS + 1)


def test_two_rank_validation_metrics_match_one_process_on_the_checkpoint(trained):
    """The validation metrics synced over 2 gloo ranks equal those of one process."""
    from knd.data.label_sets import label_set
    from knd.data.ravdess import EMOTIONS
    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_model
    from knd.learning.inference import predict
    from knd.learning.metrics import split_metrics

    model, meta = load_model(trained.result.checkpoint)
    epoch = meta["epoch"]
    reported = next(h for h in trained.result.history if h["epoch"] == epoch)
    assert reported["world_size"] == 2
    table = load_features(trained.features, actors=VAL_ACTORS)
    preds, _ = predict(model, meta, table.groups["logmel"])
    targets = label_set("ravdess8", EMOTIONS).targets(table.emotion, EMOTIONS)
    one = split_metrics(preds, targets, len(meta["labels"]))
    assert reported["val_n"] == one["n"] == 60
    assert reported["val_accuracy"] == pytest.approx(one["accuracy"], abs=1.5 / 60)
    assert reported["val_uar"] == pytest.approx(one["uar"], abs=0.03)
    assert trained.result.metrics["val"]["uar"] == pytest.approx(one["uar"])


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    from knd.learning.checkpoint import load_meta
    from knd.stages.train import run

    checkpoint = trained.result.checkpoint
    done = load_meta(checkpoint)["epoch"]
    cfg = train_cfg(
        trained.features,
        tmp_path / "runs",
        "resumed",
        f"resume={checkpoint}",
        f"optim.epochs={EPOCHS + 1}",
        "train.num_workers=1",
    )
    result = run(cfg)
    history = result.history
    assert [h["epoch"] for h in history] == list(range(done + 1, EPOCHS + 2))
    steps_per_epoch = trained.result.history[0]["step"]
    # One worker takes the whole global batch, so the step count per epoch is the same.
    assert history[0]["step"] == (done + 1) * steps_per_epoch
    assert result.metrics["test"]["uar"] > clearly_above_chance(8, result.metrics["test"]["n"])
    with pytest.raises(ValueError, match="set optim.epochs above it"):
        run(
            train_cfg(
                trained.features,
                tmp_path / "runs",
                "again",
                f"resume={checkpoint}",
                f"optim.epochs={done}",
            )
        )


# The default recipe's shape: no validation speaker, a one-cycle schedule, the last epoch kept.
NO_VALIDATION = [
    "recipe=plain_cnn", "split.val_speakers=[]", "optim.schedule=onecycle", "train.num_workers=1",
    "train.num_to_keep=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def spot(tiny_features, ray_session, tmp_path_factory):
    """A real ``knd train`` of the no-validation recipe, SIGKILLed once Ray has recorded a
    checkpoint (after epoch 1 of 2, as a spot reclaim would), then the same command (same run_dir
    and name) run again in this process with hooks that record the epochs it trains."""
    from killing import kill_when, start_killable

    from knd.learning.report import read_history
    from knd.stages.train import RAY_RUN_SNAPSHOT, run

    root = tmp_path_factory.mktemp("spot")
    runs, name, epochs = root / "runs", "spot", 2
    extra = [*NO_VALIDATION, f"optim.epochs={epochs}"]
    args = [f"data={tiny_features}", f"run_dir={runs}", f"name={name}", *TINY, *extra]
    child = start_killable(["train", *args], ray_session)
    kill_when(child, lambda: (runs / name / RAY_RUN_SNAPSHOT).exists(), timeout_s=300)
    before = read_history(str(runs / name))
    metrics_before_rerun = (runs / name / "metrics.json").exists()
    hooks = root / "hooks"
    hooks.mkdir()
    result = run(train_cfg(tiny_features, runs, name, *extra), hooks=RecordAndKill(str(hooks)))
    trained_again = {
        int(line.split()[0]) for line in (hooks / "epochs.txt").read_text().split("\n") if line
    }
    return SimpleNamespace(
        returncode=child.returncode, before=before, metrics_before_rerun=metrics_before_rerun,
        result=result, trained_again=trained_again, epochs=epochs, run=runs / name,
    )  # fmt: skip


@pytest.mark.slow
def test_a_killed_driver_reruns_into_the_same_run_and_continues_its_epochs(spot):
    """The killed ``knd train`` left a checkpoint and no report; its rerun continued from it
    instead of starting again."""
    assert spot.returncode == -signal.SIGKILL
    assert 1 <= len(spot.before) < spot.epochs and not spot.metrics_before_rerun
    assert spot.trained_again and min(spot.trained_again) >= 2
    assert max(spot.trained_again) == spot.epochs
    assert [h["epoch"] for h in spot.result.history] == list(range(1, spot.epochs + 1))
    assert spot.result.history[0] == spot.before[0]
    assert (spot.run / "metrics.json").exists() and (spot.run / "checkpoint").is_dir()


def test_resume_refuses_a_pickle_bearing_checkpoint(trained, tmp_path):
    from knd.learning.checkpoint import MODEL_FILE, TRAIN_STATE_FILE
    from knd.stages.evaluate import run as evaluate
    from knd.stages.train import run

    bad = tmp_path / "bad"
    shutil.copytree(trained.result.checkpoint, bad)
    marker = tmp_path / "code-ran"
    torch.save({"epoch": RunsCode(str(marker))}, bad / TRAIN_STATE_FILE)
    cfg = train_cfg(trained.features, tmp_path, "bad", f"resume={bad}", "optim.epochs=9")
    with pytest.raises(ValueError, match="refused to load"):
        run(cfg)
    torch.save({"w": RunsCode(str(marker))}, bad / MODEL_FILE)
    eval_cfg = load_config("evaluate", [f"checkpoint={bad}", f"data={trained.features}"])
    with pytest.raises(ValueError, match="refused to load"):
        evaluate(eval_cfg)
    assert not marker.exists()


class RunsCode:
    """Unpickling this would create ``path``: a stand-in for an attacker's payload."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_evaluate_writes_its_report_and_batch_size_does_not_change_predictions(trained, tmp_path):
    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_model
    from knd.learning.inference import predict
    from knd.stages.evaluate import run as evaluate

    results = {}
    for batch in (1, 7, 256):
        cfg = load_config(
            "evaluate",
            [
                f"checkpoint={trained.result.checkpoint}",
                f"data={trained.features}",
                f"out={tmp_path / str(batch)}",
                f"batch_size={batch}",
            ],
        )
        results[batch] = evaluate(cfg)
    for batch in (7, 256):
        assert results[batch].metrics["test"] == results[1].metrics["test"]
    out = tmp_path / "256"
    written = json.loads((out / "metrics.json").read_text())
    # By default the checkpoint's own test actors are evaluated: the train run's test figures.
    assert written["test_actors"] == list(TEST_ACTORS)
    assert written["test"]["confusion"] == trained.result.metrics["test"]["confusion"]
    assert (out / "confusion.png").read_bytes().startswith(b"\x89PNG")
    rows = (out / "per_actor.csv").read_text().splitlines()
    assert rows[0] == "actor,speaker,n,accuracy,uar,macro_f1"
    assert [r.split(",")[:3] for r in rows[1:]] == [["1", "1", "60"], ["2", "2", "60"]]

    model, meta = load_model(trained.result.checkpoint)
    table = load_features(trained.features, actors=TEST_ACTORS)
    _, one = predict(model, meta, table.groups["logmel"], batch_size=1)
    _, many = predict(model, meta, table.groups["logmel"], batch_size=120)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)


def test_evaluate_refuses_features_made_with_other_parameters(trained, tmp_path):
    from knd.audio.features import feature_hash
    from knd.config.loading import build
    from knd.config.schema import FeatureConfig
    from knd.stages.evaluate import run as evaluate

    other = tmp_path / "features"
    shutil.copytree(trained.features, other)
    manifest = json.loads((other / "manifest.json").read_text())
    # What prepare with one more mel band would have recorded (the shards are left as they are).
    manifest["feature_params"]["n_mels"] += 1
    params = build(FeatureConfig, manifest["feature_params"])
    manifest["feature_groups"]["logmel"]["hash"] = feature_hash(params)
    (other / "manifest.json").write_text(json.dumps(manifest))
    cfg = load_config("evaluate", [f"checkpoint={trained.result.checkpoint}", f"data={other}"])
    with pytest.raises(ValueError, match="other parameters"):
        evaluate(cfg)


def _validate(checkpoint: str, features: str, rank: int, world: int) -> dict:
    """The engine's evaluation of this rank's share of the rows, as a training worker runs it."""
    from knd.data.label_sets import label_set
    from knd.data.ravdess import EMOTIONS
    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_model
    from knd.learning.engine import evaluate, ordered_batches
    from knd.learning.feed import rank_share

    torch.set_num_threads(1)
    model, meta = load_model(checkpoint)
    table = load_features(features, actors=VAL_ACTORS + TEST_ACTORS)
    mine = rank_share(table.path, rank, world)
    stats = meta["group_norm"]["logmel"]
    norm = {"logmel": (torch.tensor(stats["mean"]), torch.tensor(stats["std"]))}
    x = {"logmel": torch.from_numpy(table.groups["logmel"][mine])}
    y = torch.from_numpy(label_set("ravdess8", EMOTIONS).targets(table.emotion[mine], EMOTIONS))
    return evaluate(model, ordered_batches(x, y, 7), norm, 8, torch.device("cpu"))


def _rank_main(rank: int, world: int, init: str, checkpoint: str, features: str, out: str):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = _validate(checkpoint, features, rank, world)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_metrics_synced_over_two_gloo_ranks_equal_one_process(trained, tmp_path):
    """Engine evaluation in a real 2-process gloo group: each rank scores half, metrics sync."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    args = (2, init, trained.result.checkpoint, trained.features, str(tmp_path))
    mp.spawn(_rank_main, args=args, nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = _validate(trained.result.checkpoint, trained.features, 0, 1)
    assert one["n"] == 180
    one_loss = one.pop("loss")
    for synced in ranks:  # every rank gets the metrics of all rows, not of its own half
        assert synced.pop("loss") == pytest.approx(one_loss, rel=1e-5)
        assert synced == one


def test_without_a_validation_group_every_non_test_actor_trains_and_the_last_epoch_is_kept(spot):
    """``split.val_speakers=[]`` (the default recipe): no speaker is spent on model selection; the
    one-cycle schedule went on across the driver's death (the run above)."""
    from knd.learning.checkpoint import load_meta

    result = spot.result
    report = result.metrics
    assert report["train_actors"] == [3, 4, 5, 6, 7, 8] and report["val_actors"] == []
    assert report["val"] is None and report["test"]["n"] == 120
    assert report["model_selection"].startswith("fixed schedule: last epoch")
    assert result.best_epoch == 2 == load_meta(result.checkpoint)["epoch"]
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert not any(k.startswith("val_") for k in result.history[-1])
    written = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    assert written["model_selection"] == report["model_selection"]
