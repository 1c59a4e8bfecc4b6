"""Listing a local folder: symlink loops, links to ancestors and twice-linked files list once."""

from __future__ import annotations

import os

import pytest

from knd.data import storage


def test_listing_never_follows_a_directory_symlink_into_a_loop(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("a.wav", "sub/b.wav", "sub/deeper/c.wav"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink("..", tmp_path / "sub" / "loop")  # the ``ln -s .. loop`` of the report
    os.symlink("../..", tmp_path / "sub" / "deeper" / "loop2")
    os.symlink(tmp_path / "sub", tmp_path / "sub_again")  # a second name for one folder
    os.symlink("/", tmp_path / "root")  # an ancestor: would list the whole machine
    os.symlink(tmp_path / "a.wav", tmp_path / "a_link.wav")  # a second name for one file
    os.symlink(tmp_path / "gone", tmp_path / "dangling.wav")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.wav").write_bytes(b"x")

    listed = storage.list_files(str(tmp_path), storage.AUDIO_SUFFIXES)

    names = [os.path.relpath(p, tmp_path) for p in listed]
    assert len(names) == 3, names
    real = sorted(os.path.realpath(p) for p in listed)
    assert real == sorted(str(tmp_path / n) for n in ("a.wav", "sub/b.wav", "sub/deeper/c.wav"))
    assert listed == sorted(listed)


def test_listing_a_single_file_and_a_missing_path(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    assert storage.list_files(str(tmp_path / "x.wav")) == [str(tmp_path / "x.wav")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        storage.list_files(str(tmp_path / "nope"))


def test_two_loops_list_quickly_with_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"12345")
    os.symlink("..", tmp_path / "a" / "loop1")  # two loops hung pyarrow's recursive listing
    os.symlink("..", tmp_path / "a" / "loop2")
    os.symlink(".", tmp_path / "loop3")
    infos = storage.list_file_infos(str(tmp_path))
    assert [(os.path.relpath(i.path, tmp_path), i.size) for i in infos] == [("a/x.wav", 5)]
    assert infos[0].mtime_ns == (tmp_path / "a" / "x.wav").stat().st_mtime_ns


def test_absolute_makes_local_paths_absolute_and_leaves_s3_alone(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage.absolute("runs") == str(tmp_path.resolve() / "runs")
    assert storage.absolute("~/runs") == str(tmp_path.resolve() / "runs")
    assert storage.absolute("link/x") == str(tmp_path.resolve() / "real" / "x")
    assert storage.absolute("s3://bucket/runs") == "s3://bucket/runs"
    assert storage.resolve("runs")[1] == storage.absolute("runs")
