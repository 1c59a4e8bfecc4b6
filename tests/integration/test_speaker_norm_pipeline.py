"""``normalise=speaker`` through a real run: train records it, evaluate and score apply it from
each speaker's own clips, and a scoring mode the checkpoint was not trained for is refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from knd.config.loading import load_config

pytestmark = pytest.mark.ray

TRAIN = [
    "recipe=cpu_small", "model.width=8", "optim.epochs=2", "optim.batch_size=32",
    "train.num_workers=1", "wandb.enabled=false", "split.test_speakers=[1,2]",
    "split.val_speakers=[3]", "labels=[neutral,happy,sad,angry]",
]  # fmt: skip


@pytest.fixture(scope="module")
def speaker_run(tiny_features, ray_session, tmp_path_factory):
    """One speaker-normalised run on four of the corpus's eight labels."""
    from knd.stages.train import run

    root = tmp_path_factory.mktemp("speaker_norm")
    args = [f"data={tiny_features}", f"run_dir={root / 'runs'}", "name=by_speaker", *TRAIN]
    result = run(load_config("train", [*args, "normalise=speaker"]))
    return SimpleNamespace(result=result, root=root, features=tiny_features)


def test_the_checkpoint_records_the_mode_and_the_training_speakers_prior(speaker_run):
    meta = json.loads((Path(speaker_run.result.checkpoint) / "meta.json").read_text())
    record = meta["speaker_norm"]
    assert record["groups"] == ["logmel"] and record["prior_clips"] == 4.0
    prior, norm = record["prior"]["logmel"], meta["group_norm"]["logmel"]
    assert len(prior["mean"]) == len(norm["mean"]) == 64
    # The model's own statistics are of speaker-normalised inputs (a few units, the padding
    # frames included), the prior of the raw log-mel's speech frames (tens of dB).
    assert abs(np.mean(norm["mean"])) < 3 and np.mean(prior["mean"]) < -10


def test_evaluate_applies_it_and_gives_the_runs_own_test_figures(speaker_run, tmp_path):
    from knd.stages.evaluate import run as evaluate

    args = [f"checkpoint={speaker_run.result.checkpoint}", f"data={speaker_run.features}"]
    evaluated = evaluate(load_config("evaluate", [*args, f"out={tmp_path}"])).metrics
    trained = speaker_run.result.metrics
    assert evaluated["test_speakers"] == trained["test_speakers"] == ["1", "2"]
    assert evaluated["test"]["n"] == trained["test"]["n"] == 2 * (4 + 3 * 8)  # neutral has 4
    assert evaluated["test"]["accuracy"] == pytest.approx(trained["test"]["accuracy"])


def test_score_by_folder_gives_evaluates_probabilities_on_the_same_clips(
    speaker_run, tiny_corpus, tmp_path
):
    import shutil

    import pandas as pd

    from knd.learning.checkpoint import load_model
    from knd.learning.inference import score_actors
    from knd.stages.score import run as score

    audio = tmp_path / "audio"
    for actor in ("Actor_01", "Actor_02"):  # a folder per speaker, as RAVDESS ships
        shutil.copytree(Path(tiny_corpus) / actor, audio / actor)
    output = tmp_path / "scores.parquet"
    args = [f"checkpoint={speaker_run.result.checkpoint}", f"input={audio}", f"output={output}"]
    score(load_config("score", [*args, "speaker_from=folder", "num_actors=1"]))
    scored = pd.read_parquet(output)
    scored.index = scored["path"].map(_name)
    assert set(scored["speaker_stats"]) == {"folder:Actor_01", "folder:Actor_02"}
    model, meta = load_model(speaker_run.result.checkpoint)
    evaluated = score_actors(model, meta, speaker_run.features, [1, 2])
    names = [_name(p) for p in evaluated.table.path]
    columns = [f"p_{label}" for label in meta["labels"]]
    assert len(names) == 56 and len(scored) == 120  # every clip is scored, 4 labels evaluated
    np.testing.assert_allclose(scored.loc[names, columns].to_numpy(), evaluated.probs, atol=1e-5)
    # The same speakers named by a label table instead of folders: the same probabilities.
    table = tmp_path / "speakers.csv"
    files = sorted(audio.rglob("*.wav"))
    rows = [f"{f.relative_to(audio).as_posix()},x,{f.parent.name[-2:]}" for f in files]
    table.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    by_table = tmp_path / "by_table.parquet"
    extra = ["speaker_from=table", f"speaker_table={table}", "num_actors=1"]
    score(load_config("score", [*args[:2], f"output={by_table}", *extra]))
    tabled = pd.read_parquet(by_table)
    tabled.index = tabled["path"].map(_name)
    assert set(tabled["speaker_stats"]) == {"table:01", "table:02"}
    np.testing.assert_allclose(tabled.loc[names, columns], scored.loc[names, columns], atol=1e-6)


def _name(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def test_a_checkpoint_refuses_a_scoring_mode_it_was_not_trained_for(speaker_run, tmp_path):
    from knd.stages.score import run as score

    audio = tmp_path / "audio"
    audio.mkdir()
    common = [f"input={audio}", f"output={tmp_path / 's.csv'}"]
    by_speaker = [f"checkpoint={speaker_run.result.checkpoint}", *common]
    with pytest.raises(ValueError, match="trained with normalise=speaker: say who speaks"):
        score(load_config("score", by_speaker))
    global_checkpoint = Path(__file__).parents[1] / "fixtures" / "v1" / "checkpoint"
    with pytest.raises(ValueError, match="speaker_from=folder: .* trained with normalise=global"):
        score(
            load_config(
                "score", [f"checkpoint={global_checkpoint}", *common, "speaker_from=folder"]
            )
        )


def test_tune_takes_the_mode_from_its_space_and_the_retrained_checkpoint_records_it(
    tiny_features, ray_session, tmp_path
):
    import yaml

    from knd.stages.tune import run as tune

    space = tmp_path / "space.yaml"
    entries = {"normalise": {"choice": ["speaker"]}, "model.width": 8, "optim.epochs": 1}
    space.write_text(yaml.safe_dump(entries))
    args = [
        f"data={tiny_features}", f"space={space}", "recipe=cpu_small", "test_speakers=[1,2]",
        "folds=2", "num_samples=1", "max_epochs=1", f"storage_path={tmp_path}", "name=modes",
        "max_concurrent=1", "wandb.enabled=false",
    ]  # fmt: skip
    result = tune(load_config("tune", args))
    assert result.exit_code == 0 and result.best["params"]["normalise"] == "speaker"
    meta = json.loads((Path(result.test["checkpoint"]) / "meta.json").read_text())
    assert meta["speaker_norm"]["groups"] == ["logmel"]
    assert len(meta["speaker_norm"]["prior"]["logmel"]["mean"]) == 64


@pytest.mark.parametrize("mode", ["file", "none"])
def test_score_by_file_or_by_no_one_says_whose_statistics_it_used(
    speaker_run, tiny_corpus, tmp_path, mode
):
    import shutil

    import pandas as pd

    from knd.stages.score import run as score

    audio = tmp_path / "audio"
    audio.mkdir()
    for wav in sorted((Path(tiny_corpus) / "Actor_05").glob("*.wav"))[:3]:
        shutil.copy(wav, audio / wav.name)
    output = tmp_path / "scores.csv"
    args = [f"checkpoint={speaker_run.result.checkpoint}", f"input={audio}", f"output={output}"]
    result = score(load_config("score", [*args, f"speaker_from={mode}", "num_actors=1"]))
    table = pd.read_csv(output, dtype={"error": str}).fillna({"error": ""})
    assert result.failed == 0 and len(table) == 3
    assert set(table["speaker_stats"]) == {"file" if mode == "file" else "pooled"}
    probs = table[[f"p_{label}" for label in ("neutral", "happy", "sad", "angry")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_features_too_large_for_memory_are_normalised_alike_when_streamed(
    tiny_features, ray_session
):
    from knd.data.label_sets import label_set
    from knd.data.ravdess import split_actors
    from knd.data.shards import manifest_emotions, read_manifest
    from knd.learning.feed import _held_by_driver, _streamed

    args = [f"data={tiny_features}", *TRAIN, "normalise=speaker"]
    cfg = load_config("train", args)
    manifest = read_manifest(tiny_features)
    split = split_actors((1, 2), (3,), actors=list(range(1, 9)))
    labels = label_set(cfg.labels, manifest_emotions(manifest))
    held, streamed = (way(cfg, manifest, split, labels) for way in (_held_by_driver, _streamed))
    for a, b in zip(held.speaker_norm["prior"]["logmel"].values(),
                    streamed.speaker_norm["prior"]["logmel"].values(), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-6)

    def per_actor_means(batches) -> dict[int, float]:
        sums: dict[int, list[float]] = {}
        for batch in batches:
            for actor in np.unique(batch["actor"]):
                rows = batch["logmel"][batch["actor"] == actor].astype(np.float64)
                total = sums.setdefault(int(actor), [0.0, 0])
                total[0], total[1] = total[0] + rows.sum(), total[1] + rows.size
        return {actor: s / n for actor, (s, n) in sums.items()}

    a, b = per_actor_means(held.train_batches()), per_actor_means(streamed.train_batches())
    assert a.keys() == b.keys() == {4, 5, 6, 7, 8}
    for actor in a:
        assert a[actor] == pytest.approx(b[actor], abs=1e-3)
    assert held.num_train_rows == streamed.num_train_rows == 5 * 28
