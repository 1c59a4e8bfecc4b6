"""S3 writes through moto's server: an interrupted write never leaves a partial object under the
final name, and a folder is replaced without a moment where it holds nothing."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from knd.data import storage


def _keys(prefix: str) -> list[str]:
    fs, root = storage.resolve(prefix)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File)


def test_s3_write_is_whole_and_leaves_no_temporary_key(s3_server):
    uri = f"{s3_server.url}/atomic/a/file.bin"
    storage.write_bytes(uri, b"x" * 100_000)
    assert storage.read_bytes(uri) == b"x" * 100_000
    assert _keys(f"{s3_server.url}/atomic") == ["a/file.bin"]


def test_an_interrupted_s3_write_keeps_the_old_object(s3_server):
    uri = f"{s3_server.url}/interrupted/meta.json"
    storage.write_text(uri, "old")
    # Not bytes: the stream raises on write. pyarrow would still complete the upload on close,
    # so writing the final key directly would leave an empty object under it.
    with pytest.raises(TypeError):
        storage.write_bytes(uri, 12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        storage.write_bytes(f"{s3_server.url}/interrupted/new.json", 12345)  # type: ignore[arg-type]
    assert storage.read_text(uri) == "old"
    assert _keys(f"{s3_server.url}/interrupted") == ["meta.json"]


@pytest.mark.parametrize(("remote", "src_remote"), [(True, False), (False, False), (True, True)])
def test_replace_folder_swaps_files_and_drops_stale_ones(s3_server, tmp_path, remote, src_remote):
    # Ray Train's checkpoint is local or, with an s3:// run_dir, itself on S3.
    src = f"{s3_server.url}/src-{remote}" if src_remote else str(tmp_path / "src")
    storage.write_bytes(storage.join(src, "model.pt"), b"new-model")
    storage.write_text(storage.join(src, "meta.json"), '{"epoch": 2}')
    storage.write_bytes(storage.join(src, "sub", "extra.bin"), b"e")
    src_fs, src_path = storage.resolve(src)
    dest = f"{s3_server.url}/ckpt-{remote}-{src_remote}" if remote else str(tmp_path / "dest")
    storage.write_bytes(storage.join(dest, "model.pt"), b"old-model")
    storage.write_text(storage.join(dest, "meta.json"), '{"epoch": 1}')
    storage.write_text(storage.join(dest, "train_state.pt"), "stale")

    storage.replace_folder(src_fs, src_path, dest, last=("meta.json",))

    assert storage.read_bytes(storage.join(dest, "model.pt")) == b"new-model"
    assert storage.read_text(storage.join(dest, "meta.json")) == '{"epoch": 2}'
    assert storage.read_bytes(storage.join(dest, "sub", "extra.bin")) == b"e"
    assert not storage.exists(storage.join(dest, "train_state.pt"))
    if remote:
        assert _keys(dest) == ["meta.json", "model.pt", "sub/extra.bin"]
