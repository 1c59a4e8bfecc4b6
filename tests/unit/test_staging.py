"""The one staging protocol: whole parts, found again by key, unreadable ones discarded, one
commit (a folder renamed into place or the parts written into one file)."""

from __future__ import annotations

import json

from knd.data.staging import Staging, staging_key


def test_the_key_names_what_defines_the_output_whatever_the_order_of_its_fields():
    assert staging_key({"a": 1, "b": [1, 2]}) == staging_key({"b": [1, 2], "a": 1})
    assert staging_key({"a": 1}) != staging_key({"a": 2})


def test_a_rerun_lists_the_finished_parts_and_discards_one_it_cannot_read(tmp_path):
    stage = Staging(str(tmp_path / ".staged"))
    assert stage.names() == set() and stage.finished() == []  # not there yet: nothing staged
    stage.create()
    stage.write("part-1.json", json.dumps([1]).encode())
    stage.write("part-0.json", json.dumps([0]).encode())
    (tmp_path / ".staged" / "part-2.json").write_bytes(b"[tor")  # a torn part
    (tmp_path / ".staged" / "shard-0.bin").write_bytes(b"payload")

    again = Staging(str(tmp_path / ".staged"))
    names = again.finished(prefix="part-", suffix=".json")
    assert names == ["part-0.json", "part-1.json", "part-2.json"]
    for workers in (1, 4):
        read = list(again.read_finished(names, json.loads, workers=workers))
        assert read == [("part-0.json", [0]), ("part-1.json", [1])]
        assert "part-2.json" not in again.names()  # discarded: its work is done again
        names = names[:2]
    assert not list((tmp_path / ".staged").glob(".*.tmp")), "a temporary file was left behind"

    again.discard("part-1.json", "never-written.json")
    again.keep_only({"shard-0.bin"})
    assert again.names() == {"shard-0.bin"}


def test_a_folder_commit_replaces_the_folder_there_in_one_rename(tmp_path):
    stage = Staging(str(tmp_path / ".tmp-out"))
    stage.write("a", b"new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_bytes(b"old")
    committed = stage.commit_folder(str(tmp_path / "out"))
    assert committed.names() == {"a"} and not (tmp_path / ".tmp-out").exists()
    assert committed.commit_folder(str(tmp_path / "out")) is committed  # staged in place


def test_a_file_commit_writes_the_parts_into_the_output_and_drops_the_folder(tmp_path):
    stage = Staging(str(tmp_path / ".out.staged"))
    stage.write("chunk-0", b"a,")
    stage.write("chunk-1", b"b")
    output = tmp_path / "out.csv"
    output.write_bytes(b"old")

    def concatenate(stream):
        for name in stage.finished(prefix="chunk-"):
            stream.write((tmp_path / ".out.staged" / name).read_bytes())

    stage.commit_file(str(output), concatenate)
    assert output.read_bytes() == b"a,b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
