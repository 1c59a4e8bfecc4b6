"""``knd score`` on real local Ray: the probabilities of evaluate, bad files as error rows, S3."""

from __future__ import annotations

import io
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from knd.config.loading import load_config
from knd.data import storage
from knd.data.ravdess import EMOTIONS

pytestmark = pytest.mark.ray

P_COLUMNS = [f"p_{name}" for name in EMOTIONS]
LONG_S = 61.0  # a file of 40 windows (hop 1.5 s): far longer than one 3 s clip


@pytest.fixture(scope="module")
def checkpoint(tiny_features, tmp_path_factory):
    """A real (untrained) cpu_small checkpoint with the tiny features' parameters and norm stats.

    The classifier's weights are scaled up so probabilities are far from uniform: equality to
    1e-4 then says something.
    """
    import torch

    from knd.data.shards import load_features
    from knd.learning.checkpoint import make_meta, save_checkpoint
    from knd.learning.models import build_model

    table = load_features(tiny_features)
    manifest, logmel = table.manifest, table.groups["logmel"]
    torch.manual_seed(0)
    model = build_model("cpu_small", len(EMOTIONS), width=8, dropout=0.0)
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    actors = sorted({int(a) for a in table.actor})
    meta = make_meta(
        load_config("train", ["data=x", "recipe=cpu_small", "model.width=8", "model.dropout=0"]),
        manifest,
        {"logmel": {"mean": logmel.mean(axis=(0, 2)), "std": logmel.std(axis=(0, 2))}},
        {"test": actors},
        run="untrained",
        epoch=0,
        metrics={},
    )
    folder = tmp_path_factory.mktemp("score_ckpt") / "checkpoint"
    save_checkpoint(str(folder), model, meta)
    return str(folder)


def score(checkpoint: str, input: str, output: str, *overrides: str):
    from knd.stages.score import run

    args = [f"checkpoint={checkpoint}", f"input={input}", f"output={output}", *overrides]
    return run(load_config("score", args))


def voice(seconds: float, sr: int, f0: float = 160.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a moving pitch and a syllable-like envelope (mono, float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.4 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.3 + 0.7 * np.sin(2 * np.pi * 2.1 * t) ** 2
    noise = 0.01 * rng.standard_normal(len(t))
    return (0.2 * wave * envelope + noise).astype(np.float32)


def test_scores_equal_evaluate_and_do_not_depend_on_batching(
    checkpoint, tiny_corpus, tiny_features, tmp_path
):
    import shutil

    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_model
    from knd.learning.inference import predict

    # A dozen corpus files spread over the actors and emotions (scoring all 480 would take minutes).
    folder = tmp_path / "clips"
    chosen = storage.list_files(tiny_corpus)[5::40]
    for path in chosen:
        target = folder / Path(path).relative_to(Path(tiny_corpus).resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    a = score(checkpoint, str(folder), str(tmp_path / "a.parquet"), "batch_size=64", "num_actors=2")
    # The other path: an actor pool rather than tasks on the warm workers, other batches.
    extra = ["batch_size=3", "num_actors=1", "compute=actors"]
    score(checkpoint, str(folder), str(tmp_path / "b.csv"), *extra)
    assert a.exit_code == 0 and a.failed == 0 and a.num_files == len(chosen) == 12
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert list(table.columns) == ["path", "label", "confidence", *P_COLUMNS, "duration", "error"]
    assert (table["error"] == "").all()

    # evaluate's own path: the prepared (stored, float16) features through evaluate.predict.
    model, meta = load_model(checkpoint)
    prepared = load_features(tiny_features)
    _, expected = predict(model, meta, prepared.groups["logmel"])
    relative = [Path(p).relative_to(folder).as_posix() for p in table["path"]]
    rows = pd.Series(np.arange(len(prepared.path)), index=prepared.path).loc[relative].to_numpy()
    np.testing.assert_allclose(table[P_COLUMNS].to_numpy(), expected[rows], atol=1e-4)
    # The tolerance is far below how much probabilities differ between classes and clips.
    assert np.ptp(expected[rows], axis=1).min() > 100 * 1e-4
    assert np.ptp(expected[rows], axis=0).max() > 100 * 1e-4
    np.testing.assert_allclose(table["duration"], prepared.duration[rows], rtol=1e-5)

    other = pd.read_csv(tmp_path / "b.csv", dtype={"error": str}).fillna({"error": ""})
    assert list(other["path"]) == list(table["path"])
    assert list(other["label"]) == list(table["label"])
    np.testing.assert_allclose(table[P_COLUMNS], other[P_COLUMNS], atol=1e-6)


def test_a_checkpoint_rewritten_in_place_is_not_scored_from_a_stale_cache(
    checkpoint, ray_session, tmp_path
):
    """Each worker process keeps the model it loaded, keyed by the checkpoint's hash: a new model
    saved under the same folder is scored with its own weights in the same Ray session."""
    import shutil

    import torch

    from knd.learning.checkpoint import load_meta, save_checkpoint
    from knd.learning.models import build_model

    folder, model_dir = tmp_path / "clips", tmp_path / "checkpoint"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"clip{i}.wav", voice(1.0, 16000, 120 + 20 * i, seed=i), 16000)
    shutil.copytree(checkpoint, model_dir)
    before = score(str(model_dir), str(folder), str(tmp_path / "before.csv"), "compute=tasks")
    torch.manual_seed(1)
    other = build_model("cpu_small", len(EMOTIONS), width=8, dropout=0.0)
    with torch.no_grad():
        other.classifier.weight.mul_(20.0)
    save_checkpoint(str(model_dir), other, load_meta(checkpoint))
    score(str(model_dir), str(folder), str(tmp_path / "after.csv"), "compute=tasks")
    score(str(model_dir), str(folder), str(tmp_path / "fresh.csv"), "compute=actors")
    first, after, fresh = (
        pd.read_csv(tmp_path / f"{name}.csv")[P_COLUMNS].to_numpy()
        for name in ("before", "after", "fresh")
    )
    assert before.failed == 0 and np.abs(after - first).max() > 1e-3
    np.testing.assert_allclose(after, fresh, atol=1e-6)


def test_a_killed_run_resumes_the_rows_it_staged(checkpoint, ray_session, tmp_path):
    """SIGKILL a real ``knd score`` once it has staged some rows, then run it again: the rerun
    scores only the files not staged, and the output equals an uninterrupted run's."""
    from killing import kill_when, start_killable

    folder, out = tmp_path / "clips", tmp_path / "scores.parquet"
    folder.mkdir()
    # Eight chunks, not three: under load the driver has received several batches at once and
    # committed every chunk before the kill landed (it did with three).
    files = 128
    for i in range(files):
        sf.write(folder / f"clip{i:03d}.wav", voice(1.0, 44100, 120 + i, seed=i), 44100)

    def staged() -> list[Path]:
        return list(tmp_path.glob(".scores.parquet.staged-*/chunk-*"))

    # num_actors=1: a chunk per batch of FILES_PER_TASK (16) files, 8 chunks in all
    args = [f"checkpoint={checkpoint}", f"input={folder}", f"output={out}", "num_actors=1"]
    child = start_killable(["score", *args], ray_session)
    kill_when(child, lambda: len(staged()) >= 1)
    assert child.returncode == -signal.SIGKILL and not out.exists()
    scored = sum(len(pd.read_parquet(chunk)) for chunk in staged())
    assert 0 < scored < files, scored

    again = score(checkpoint, str(folder), str(out), "num_actors=1")
    assert again.num_files == files and again.failed == 0
    assert scored <= again.resumed < files  # every staged file kept, none scored twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "scores.parquet"]
    score(checkpoint, str(folder), str(tmp_path / "ref.parquet"))
    resumed, reference = pd.read_parquet(out), pd.read_parquet(tmp_path / "ref.parquet")
    assert resumed["path"].is_unique and len(resumed) == files
    resumed = resumed.sort_values("path").reset_index(drop=True)
    reference = reference.sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, atol=1e-6)


def test_a_file_that_kills_its_scoring_actor_is_retried_once_alone_then_reported(ray_session):
    """Ray Data's own defaults (no retry options passed): a dead actor is restarted and its task
    run again without limit. bounded_rerun makes every rerun progress and ends the loop."""
    import os

    import ray

    from knd.runtime.tasks import KILLED_TWICE, AttemptLedger, bounded_rerun

    class DiesOnB:
        """Its actor process dies outright (as under the OOM killer) whenever it reads ``b``."""

        def __init__(self, ledger):
            self.ledger = ledger

        def __call__(self, batch):
            def work(paths, skip):
                if "b" in paths and "b" not in skip:
                    os._exit(1)
                errors = [skip.get(p, "") for p in paths]
                return {"path": np.asarray(paths, dtype=object), "error": np.asarray(errors)}

            return bounded_rerun([str(p) for p in batch["path"]], self.ledger, work)

    ledger = ray.remote(AttemptLedger).options(num_cpus=0).remote()
    ds = ray.data.from_items([{"path": p} for p in "abcdef"], override_num_blocks=2)
    ds = ds.map_batches(
        DiesOnB,
        fn_constructor_kwargs={"ledger": ledger},
        batch_size=3,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    )
    rows = {str(r["path"]): str(r["error"]) for r in ds.take_all()}
    assert sorted(rows) == list("abcdef")
    assert rows["b"] == KILLED_TWICE
    assert all(rows[p] == "" for p in "acdef")
    ray.kill(ledger)


def write_mixed_folder(root: Path) -> dict[str, str]:
    """Files of every kind score must cope with; returns name -> expected error ('' = scored)."""
    root.mkdir()
    (root / "nested").mkdir()
    base = voice(3.2, 48000)
    sf.write(root / "mono48k.wav", base, 48000, subtype="PCM_16")
    sf.write(root / "mono48k.flac", base, 48000, subtype="PCM_16")
    sf.write(root / "stereo48k.wav", np.stack([base, base], axis=1), 48000, subtype="PCM_16")
    sf.write(root / "nested/quad44k.wav", np.stack([voice(2.5, 44100)] * 4, 1), 44100, "PCM_24")
    sf.write(root / "nested/stereo22k.ogg", np.stack([voice(4, 22050, 210)] * 2, 1), 22050)
    sf.write(root / "mono8k.wav", voice(1.2, 8000, 120), 8000, subtype="FLOAT")
    sf.write(root / "long8k.wav", voice(LONG_S, 8000, 140, seed=3), 8000, subtype="PCM_16")
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("these are meeting notes, not audio\n" * 20)
    buf = io.BytesIO()
    sf.write(buf, voice(2.0, 16000), 16000, format="WAV", subtype="PCM_16")
    (root / "truncated.wav").write_bytes(buf.getvalue()[:20000])
    (root / "README.txt").write_text("not listed: not an audio suffix")
    return {
        "mono48k.wav": "",
        "mono48k.flac": "",
        "stereo48k.wav": "",
        "nested/quad44k.wav": "",
        "nested/stereo22k.ogg": "",
        "mono8k.wav": "",
        "long8k.wav": "",
        "empty.wav": "empty file",
        "notes.wav": "not audio",
        "truncated.wav": "truncated WAV",
    }


def test_mixed_folder_scores_what_it_can_and_reports_the_rest(checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    expected = write_mixed_folder(folder)
    folder = folder.resolve()  # listed paths are resolved
    result = score(checkpoint, str(folder), str(tmp_path / "out.csv"))
    assert result.exit_code == 0
    assert result.failed == 3 and result.num_files == len(expected)
    table = pd.read_csv(tmp_path / "out.csv", dtype={"error": str, "label": str})
    table = table.fillna({"error": "", "label": ""})
    table["name"] = [Path(p).relative_to(folder).as_posix() for p in table["path"]]
    rows = table.set_index("name")
    assert sorted(rows.index) == sorted(expected)
    for name, error in expected.items():
        if error:
            assert rows.loc[name, "error"].startswith(error), (name, rows.loc[name, "error"])
            assert rows.loc[name, "label"] == "" and np.isnan(rows.loc[name, "p_happy"])
        else:
            assert rows.loc[name, "error"] == "", (name, rows.loc[name, "error"])
            assert rows.loc[name, "label"] in EMOTIONS
            assert rows.loc[name, P_COLUMNS].sum() == pytest.approx(1.0, abs=1e-5)
    # Identical channels downmix to the same input, hence the same scores; libsndfile's FLAC
    # round trip differs from its WAV one by one 16-bit step, hence a looser tolerance.
    same = rows.loc[["mono48k.wav", "stereo48k.wav", "mono48k.flac"], P_COLUMNS].to_numpy()
    np.testing.assert_allclose(same[1], same[0], atol=1e-6)
    np.testing.assert_allclose(same[2], same[0], atol=1e-4)
    assert rows.loc["long8k.wav", "duration"] == pytest.approx(LONG_S)
    assert result.audio_hours * 3600 == pytest.approx(rows["duration"].sum(), rel=1e-6)
    err = capsys.readouterr().err
    assert f"failed {folder / 'empty.wav'}: empty file" in err

    # One row per window: the minute-long file gets overlapping windows covering it end to end;
    # strict makes the same failures an exit status.
    strict = score(
        checkpoint, str(folder), str(tmp_path / "w.parquet"), "per_window=true", "strict=true"
    )
    assert strict.exit_code != 0 and strict.failed == 3
    per_window = pd.read_parquet(tmp_path / "w.parquet")
    long = per_window[per_window["path"] == str(folder / "long8k.wav")].sort_values("window")
    assert len(long) == 1 + int(np.ceil((LONG_S - 3.0) / 1.5))
    assert long["start"].iloc[0] == pytest.approx(0.0, abs=0.05)
    assert long["end"].iloc[-1] == pytest.approx(LONG_S, abs=0.05)
    assert np.allclose(long["end"] - long["start"], 3.0)
    # Every file's per-file row is the mean of its window rows; a failed file is one error row.
    per_window["name"] = [Path(p).relative_to(folder).as_posix() for p in per_window["path"]]
    means = per_window.groupby("name")[P_COLUMNS].mean()
    np.testing.assert_allclose(
        means.loc[list(expected)], rows.loc[list(expected), P_COLUMNS], atol=1e-6
    )
    counts = per_window.groupby("name").size()
    assert all(counts[name] == 1 for name, error in expected.items() if error)
    assert counts["mono8k.wav"] == 1 and counts["mono48k.wav"] == 2  # 1.2 s padded; 3.2 s cut
    assert strict.num_rows == len(per_window) == counts.sum()


def plain_scores(checkpoint: str, path: Path) -> np.ndarray:
    """Mean window probabilities of one file without Ray, through the same functions."""
    from knd.audio.features import file_windows
    from knd.audio.waveform import decode_audio
    from knd.config.loading import build
    from knd.config.schema import FeatureConfig
    from knd.learning.checkpoint import load_meta
    from knd.stages.score import Scorer

    params = build(FeatureConfig, load_meta(checkpoint)["feature_params"])
    samples, rate = decode_audio(path.read_bytes())
    windows = file_windows(samples, rate, params, hop_seconds=1.5)
    feats = np.stack([w.groups["logmel"].astype(params.dtype) for w in windows])
    batch = {"logmel": feats, "error": np.full(len(windows), "", dtype=object)}
    return Scorer(checkpoint, use_gpu=False)(batch)["probs"].mean(axis=0)


def test_s3_input_and_output(checkpoint, s3_server, tmp_path):
    folder = tmp_path / "local"
    folder.mkdir()
    sf.write(folder / "a.wav", voice(2.0, 16000), 16000)
    sf.write(folder / "b.flac", voice(3.5, 44100, 220), 44100)
    (folder / "c.wav").write_bytes(b"RIFF")
    prefix = f"{s3_server.url}/score-in"
    for path in sorted(folder.iterdir()):
        storage.write_bytes(f"{prefix}/sub/{path.name}", path.read_bytes())

    output = f"{s3_server.url}/score-out/scores.parquet"
    remote = score(checkpoint, prefix, output)
    assert remote.exit_code == 0 and remote.failed == 1
    table = pd.read_parquet(io.BytesIO(storage.read_bytes(output)))
    assert list(table["path"]) == [f"{prefix}/sub/{n}" for n in ("a.wav", "b.flac", "c.wav")]
    assert table["error"].iloc[2].startswith("corrupt audio")
    expected = np.stack([plain_scores(checkpoint, folder / n) for n in ("a.wav", "b.flac")])
    np.testing.assert_allclose(table[P_COLUMNS].iloc[:2], expected, atol=1e-5)
