"""knd prepare on real local Ray: rows and labels, bad files, rerun rules, S3 through moto."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from killing import kill_when, start_killable

from knd.audio.features import feature_hash
from knd.config.loading import load_config
from knd.data import storage
from knd.data.ravdess import actor_clips, parse_name
from knd.data.shards import MANIFEST, REJECTED, load_features
from knd.learning.feed import read_features
from knd.stages.prepare import DONE_SUFFIX, run

pytestmark = pytest.mark.ray


def clip_bytes(
    name: str, seconds: float = 1.2, sr: int = 16000, channels: int = 1, fmt: str = "WAV"
) -> bytes:
    """A short harmonic 'voice' whose pitch depends on the name, so every clip differs."""
    f0 = 100 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 15000 / 100
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5)) * np.hanning(len(t))
    buf = io.BytesIO()
    sf.write(
        buf,
        np.stack([wave] * channels, axis=1).astype(np.float32),
        sr,
        format=fmt,
        subtype="VORBIS" if fmt == "OGG" else "PCM_16",
    )
    return buf.getvalue()


def write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def config(input_dir, output, *overrides):
    return load_config(
        "prepare", [f"input={input_dir}", f"output={output}", "batch_size=4", *overrides]
    )


def rejected_rows(output) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO(storage.read_text(storage.join(str(output), REJECTED))))
    return {row["path"]: row["reason"] for row in rows}


def test_tiny_corpus_rows_and_labels(tiny_corpus, tiny_features):
    files = sorted(p.relative_to(tiny_corpus).as_posix() for p in Path(tiny_corpus).rglob("*.wav"))
    table = load_features(tiny_features)
    manifest = table.manifest
    assert manifest["num_rows"] == len(table) == len(files)
    assert sorted(table.path) == files
    assert rejected_rows(tiny_features) == {}
    clips = [parse_name(p) for p in table.path]
    np.testing.assert_array_equal(table.actor, [c.actor for c in clips])
    np.testing.assert_array_equal(table.label, [c.emotion - 1 for c in clips])
    assert manifest["rows_per_actor"] == {str(a): 60 for a in sorted({c.actor for c in clips})}
    assert manifest["rows_per_emotion"]["neutral"] * 2 == manifest["rows_per_emotion"]["calm"]
    logmel, spec = table.groups["logmel"], manifest["feature_groups"]["logmel"]
    assert manifest["version"] == 2 and "feature_hash" not in manifest
    assert logmel.shape == (len(files), *spec["shape"])
    assert logmel.dtype == np.float32 and np.isfinite(logmel).all()

    ds, _ = read_features(tiny_features, actors=[1, 2], expected_hash=spec["hash"])
    batch = ds.take_batch(1000)
    assert sorted(set(batch["actor"].tolist())) == [1, 2] and len(batch["actor"]) == 120
    assert batch["logmel"].dtype == np.float32
    assert batch["logmel"].shape[1:] == tuple(spec["shape"])
    with pytest.raises(ValueError, match="features were made with other parameters"):
        read_features(tiny_features, expected_hash="0" * 16)


def test_bad_files_are_rejected_with_reasons_and_good_files_kept(ray_session, tmp_path, caplog):
    src, out = tmp_path / "in", tmp_path / "out"
    good = [
        write(src, "Actor_01/03-01-01-01-01-01-01.wav", clip_bytes("a")),
        write(src, "Actor_01/03-01-03-02-01-01-01.wav", clip_bytes("b", sr=48000)),
        write(
            src,
            "Actor_02/03-01-05-01-02-02-02.flac",
            clip_bytes("c", sr=44100, channels=2, fmt="FLAC"),
        ),
        write(src, "Actor_02/03-01-08-02-01-01-02.ogg", clip_bytes("d", sr=22050, fmt="OGG")),
        write(src, "Actor_02/03-01-04-01-01-01-02.wav", clip_bytes("e", seconds=6.0)),
    ]
    truncated = clip_bytes("f")
    silent = io.BytesIO()
    sf.write(silent, np.zeros(16000, np.float32), 16000, format="WAV")
    expected = {
        write(src, "Actor_01/03-01-02-01-01-01-01.wav", b""): "empty file",
        write(
            src, "Actor_01/03-01-02-01-02-01-01.wav", truncated[: len(truncated) // 3]
        ): "truncated WAV (expected 19200 frames",
        write(
            src, "Actor_01/03-01-02-01-01-02-01.wav", b"RIFF" + bytes(range(256)) * 8
        ): "corrupt audio",
        write(
            src, "Actor_01/03-01-02-01-02-02-01.wav", b"# notes, not a recording\n" * 40
        ): "not audio",
        write(src, "Actor_01/03-01-06-01-01-01-01.wav", silent.getvalue()): "silent",
        write(src, "Actor_01/interview_take3.wav", clip_bytes("g")): "not a RAVDESS name",
        write(
            src, "Actor_01/03-01-01-02-01-01-01.wav", clip_bytes("h")
        ): "not a RAVDESS name (neutral has no strong intensity)",
    }
    # The Kaggle layout: every file again under audio_speech_actors_01-24/, byte for byte.
    for rel in good[:2]:
        dup = write(src, f"audio_speech_actors_01-24/{rel}", (src / rel).read_bytes())
        expected[dup] = f"duplicate of {rel}"
    write(src, "README.txt", b"not listed: no audio suffix")

    with caplog.at_level(logging.INFO, logger="knd.stages.prepare"):
        result = run(config(src, out))

    assert result.exit_code == 0 and not result.skipped
    table = load_features(str(out))
    assert sorted(table.path) == sorted(good)
    # 16 kHz mono, 48 kHz, 44.1 kHz stereo FLAC, 22.05 kHz Ogg and a 6 s clip: one shape.
    shape = result.manifest["feature_groups"]["logmel"]["shape"]
    assert table.groups["logmel"].shape == (len(good), *shape)
    durations = dict(zip(table.path, table.duration, strict=True))
    assert [durations[p] for p in good] == pytest.approx([1.2, 1.2, 1.2, 1.2, 6.0], abs=0.05)
    stereo = table.groups["logmel"][list(table.path).index(good[2])]
    assert np.isfinite(stereo).all() and stereo.max() > -40  # decoded audio, not padding
    reasons = rejected_rows(out)
    assert sorted(reasons) == sorted(expected)
    for path, start in expected.items():
        assert reasons[path].startswith(start), (path, reasons[path])
        assert f"rejected {path}: {reasons[path]}" in caplog.text
    assert result.manifest["num_rejected"] == len(expected) == result.num_rejected
    assert result.manifest["rejected_reasons"]["duplicate"] == 2
    assert f"{len(expected)} rejected (" in caplog.text


def test_nothing_usable_exits_nonzero_and_commits_nothing(ray_session, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src, "Actor_01/03-01-02-01-01-01-01.wav", b"")
    write(src, "Actor_01/03-01-02-01-02-01-01.wav", b"text, not sound")
    result = run(config(src, out))
    assert result.exit_code == 1 and result.manifest is None
    assert not (out / MANIFEST).exists()
    assert len(rejected_rows(out)) == 2
    with pytest.raises(ValueError, match="no prepared features"):
        load_features(str(out))


def test_interrupted_run_then_reruns(ray_session, tmp_path, caplog):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, actor in enumerate((3, 3, 4, 4, 4)):
        write(src, f"Actor_{actor:02d}/03-01-0{i + 2}-01-01-01-{actor:02d}.wav", clip_bytes(str(i)))
    # What an interrupted run leaves: a staging folder and a renamed shard folder, no manifest.
    stale_tmp = out / ".tmp-shards-0badc0de-11111111"
    stale = out / "shards-0badc0de-22222222"
    for folder in (stale_tmp, stale):
        folder.mkdir(parents=True)
        (folder / "part-00000.parquet").write_bytes(b"half a shard")

    first = run(config(src, out, "rows_per_shard=2"))
    assert first.num_rows == 5 and not first.skipped
    assert len(first.manifest["shards"]) == 3 and first.manifest["shard_rows"] == [2, 2, 1]
    assert not stale_tmp.exists() and not stale.exists()
    assert len(load_features(str(out))) == 5

    with caplog.at_level(logging.INFO, logger="knd.stages.prepare"):
        again = run(config(src, out, "rows_per_shard=2"))
    assert again.skipped and again.manifest == first.manifest
    assert "nothing to do" in caplog.text

    other = run(config(src, out, "features.n_mels=32", "rows_per_shard=2"))
    assert not other.skipped
    first_logmel = first.manifest["feature_groups"]["logmel"]
    other_logmel = other.manifest["feature_groups"]["logmel"]
    assert other_logmel["hash"] != first_logmel["hash"]
    assert other_logmel["hash"] == feature_hash(other_params(src, out))
    old_folder = first.manifest["shards"][0].split("/")[0]
    assert not (out / old_folder).exists()
    shard_folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert shard_folders == {other.manifest["shards"][0].split("/")[0]}
    table = load_features(str(out))
    assert table.groups["logmel"].shape == (5, 32, other_logmel["shape"][1])
    with pytest.raises(ValueError, match="other parameters"):
        load_features(str(out), expected_hash=first_logmel["hash"])

    write(src, "Actor_04/03-01-08-01-01-01-04.wav", clip_bytes("new"))
    grown = run(config(src, out, "features.n_mels=32", "rows_per_shard=2"))
    assert not grown.skipped and grown.num_rows == 6


def same_features(a: str, b: str) -> None:
    """Two prepared outputs hold the same rows and the same features (every group)."""
    left, right = load_features(a), load_features(b)
    order_left, order_right = np.argsort(left.path), np.argsort(right.path)
    np.testing.assert_array_equal(left.path[order_left], right.path[order_right])
    for group, values in left.inputs().items():
        other = right.inputs()[group]
        np.testing.assert_array_equal(values[order_left], other[order_right], err_msg=group)
    for key in ("version", "feature_groups", "num_rows", "corpus_checksum", "input_listing"):
        assert left.manifest[key] == right.manifest[key], key


def test_a_killed_run_resumes_from_the_parts_it_finished(ray_session, tmp_path):
    """SIGKILL a real ``knd prepare`` about half way through its parts, then run it again: the
    rerun decodes only the files of parts without a record, commits once, leaves nothing
    unlisted, and equals an uninterrupted run."""
    src, out, ref = tmp_path / "in", tmp_path / "out", tmp_path / "ref"
    names = [f"Actor_09/{clip.file_name()}" for clip in actor_clips(9)]
    for name in names:
        write(src, name, clip_bytes(name, seconds=3.0, sr=44100))

    def records() -> list[Path]:
        return list(out.glob(f".tmp-shards-*/*{DONE_SUFFIX}"))

    # batch_size=2 on 2 CPUs: 30 parts of 2 files
    command = ["prepare", f"input={src}", f"output={out}", "batch_size=2"]
    child = start_killable(command, ray_session)
    kill_when(child, lambda: len(records()) >= 12)
    assert child.returncode == -signal.SIGKILL
    assert not (out / MANIFEST).exists()
    assert not list(out.glob("shards-*")), "a killed run left a shard folder"
    finished = sum(len(json.loads(p.read_text())) for p in records())
    assert 0 < finished < len(names), finished

    result = run(config(src, out, "batch_size=2"))
    assert result.exit_code == 0 and result.num_rows == 60 and result.num_rejected == 0
    # Every file of a finished part is reused: the rerun decodes only the others.
    assert finished <= result.num_reused < len(names)
    folder = result.manifest["shards"][0].split("/")[0]
    assert {p.name for p in out.iterdir()} == {MANIFEST, REJECTED, folder}
    listed = {f"{folder}/{p.name}" for p in (out / folder).iterdir()}
    assert listed == set(result.manifest["shards"]), "an unlisted file was left behind"

    assert run(config(src, ref, "batch_size=2")).num_reused == 0
    same_features(str(out), str(ref))


def other_params(src, out):
    return config(src, out, "features.n_mels=32").features


def test_s3_round_trip_through_moto(s3_server, ray_session, tmp_path, caplog):
    src = f"{s3_server.url}/in"
    out = f"{s3_server.url}/out"
    names = [
        "Actor_05/03-01-02-01-01-01-05.wav",
        "Actor_05/03-01-05-02-01-02-05.wav",
        "Actor_06/03-01-07-01-02-01-06.wav",
        "Actor_06/not-ravdess.wav",
    ]
    for name in names:
        storage.write_bytes(f"{src}/{name}", clip_bytes(name, sr=22050))

    with caplog.at_level(logging.INFO):
        result = run(config(src, out))
    assert result.exit_code == 0 and result.num_rows == 3 and result.num_rejected == 1
    listing = storage.list_files(out)
    assert f"{out}/{MANIFEST}" in listing and f"{out}/{REJECTED}" in listing
    assert [f.removeprefix(out + "/") for f in listing if f.endswith(".parquet")] == (
        result.manifest["shards"]
    )
    manifest = json.loads(storage.read_text(f"{out}/{MANIFEST}"))
    spec = manifest["feature_groups"]["logmel"]
    ds, _ = read_features(out, expected_hash=spec["hash"])
    rows = ds.take_all()
    assert sorted(r["path"] for r in rows) == sorted(names[:3])
    assert rows[0]["logmel"].shape == tuple(spec["shape"])
    assert load_features(out).groups["logmel"].shape == (3, *spec["shape"])
    assert run(config(src, out)).skipped
    assert "knd-test-secret" not in caplog.text


def test_a_rerun_prepares_again_when_a_listed_shard_is_gone_and_a_held_output_is_refused(
    ray_session, tmp_path
):
    from knd.data.lease import OutputBusyError, OutputLease

    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        write(src, f"Actor_07/03-01-0{i + 2}-01-01-01-07.wav", clip_bytes(f"s{i}"))
    first = run(config(src, out, "rows_per_shard=1"))
    assert first.num_rows == 3 and len(first.manifest["shards"]) == 3
    (out / first.manifest["shards"][1]).unlink()
    again = run(config(src, out, "rows_per_shard=1"))
    assert not again.skipped and again.num_rows == 3
    assert len(load_features(str(out))) == 3
    with OutputLease(str(out)), pytest.raises(OutputBusyError, match="another knd prepare"):
        run(config(src, out, "features.n_mels=32"))
    assert load_features(str(out)).manifest == again.manifest


def test_a_file_that_kills_its_ray_worker_is_reported_and_the_job_finishes(ray_session):
    from knd.runtime.tasks import KILLED_TWICE, ray_map, run_tasks

    def dies_on(paths, fatal):
        """Its worker process dies outright (as when the OOM killer takes it) on ``fatal``."""
        if fatal in paths:
            os._exit(1)
        return [{"path": p, "error": None} for p in paths]

    # Defined here, so Ray ships it by value (the workers cannot import this test module).
    tasks = [{"paths": ["a", "b", "c"]}, {"paths": ["d", "e"]}]
    rows = run_tasks(ray_map, dies_on, tasks, {"fatal": "b"})
    by_path = {r["path"]: r["error"] for r in rows}
    assert sorted(by_path) == list("abcde")
    assert by_path["b"].startswith(KILLED_TWICE)
    assert all(by_path[p] is None for p in "acde")
