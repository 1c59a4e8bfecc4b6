"""Score's streamed output: files complete only with all their windows; one atomic commit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from knd.stages.score import StagedTable, _complete_files


def part(rows):
    frame = pd.DataFrame(rows, columns=["path", "window", "n_windows", "p"])
    frame["start"] = frame["end"] = frame["duration"] = 1.0
    frame["error"] = ""
    frame["probs"] = [np.array([p, 1 - p]) for p in frame.pop("p")]
    return frame


def test_a_file_is_written_once_all_its_windows_arrived_and_a_partial_one_never():
    parts = [
        part([("a", 0, 1, 0.9), ("b", 1, 3, 0.2)]),
        part([("b", 0, 3, 0.4), ("c", 0, 2, 0.5)]),
        part([("b", 2, 3, 0.6)]),
    ]
    out = list(_complete_files(iter(parts), ["x", "y"], per_window=False))
    assert [list(t["path"]) for t in out] == [["a"], ["b"]]
    assert out[1]["p_x"].iloc[0] == pytest.approx(0.4)  # the mean of b's three windows
    # c lost a window (its block failed): not averaged from part of it, left to the caller.


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_staged_output_appears_whole_and_a_failed_run_keeps_the_old_one(tmp_path, suffix):
    output = tmp_path / f"scores{suffix}"
    chunks = [pd.DataFrame({"path": [f"f{i}"], "p": [i / 10], "error": [""]}) for i in range(3)]
    with StagedTable(str(output), key="a", chunk_files=2) as sink:
        for chunk in chunks:
            sink.write(chunk)
        assert not output.exists()
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    expected = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(read(output).fillna({"error": ""}), expected, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]

    with pytest.raises(RuntimeError), StagedTable(str(output), key="b") as sink:
        sink.write(chunks[0])
        raise RuntimeError("interrupted")
    pd.testing.assert_frame_equal(read(output).fillna({"error": ""}), expected, check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_rerun_resumes_the_whole_chunks_and_discards_a_torn_one(tmp_path, suffix):
    output = tmp_path / f"scores{suffix}"
    rows = [pd.DataFrame({"path": [f"f{i}"], "duration": [1.0], "error": [""]}) for i in range(5)]
    with pytest.raises(RuntimeError), StagedTable(str(output), key="k", chunk_files=2) as sink:
        for chunk in rows[:3]:
            sink.write(chunk)
        raise RuntimeError("killed")  # f0, f1 staged as one chunk; f2 staged on the way out
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (staging / f"chunk-999999-torn{suffix}").write_bytes(b"path,dur")  # a torn chunk

    assert StagedTable(str(output), key="other").staged_rows().empty
    again = StagedTable(str(output), key="k", chunk_files=2)
    assert sorted(again.staged_rows()["path"]) == ["f0", "f1", "f2"]
    with again as sink:
        for chunk in rows[3:]:
            sink.write(chunk)
    written = (
        pd.read_parquet(output)
        if suffix == ".parquet"
        else pd.read_csv(output, dtype={"error": str}, keep_default_na=False)
    )
    pd.testing.assert_frame_equal(written, pd.concat(rows, ignore_index=True), check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]
