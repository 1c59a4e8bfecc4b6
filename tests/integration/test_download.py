"""``knd download`` against a real HTTP server on loopback (no Ray, no Zenodo).

The server serves zips built here, under three behaviours chosen by the first path part:
``/range/`` honours ``Range`` with 206, ``/plain/`` ignores it and answers 200, ``/flaky/``
cuts the body in half unless the request resumes with ``Range``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import stat
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile as sf

from knd.config.loading import load_config
from knd.stages import download

ARCHIVE = "Audio_Speech_Actors_01-24.zip"
NAMES = [
    "Actor_01/03-01-01-01-01-01-01.wav",
    "Actor_01/03-01-05-02-02-01-01.wav",
    "Actor_02/03-01-03-01-01-02-02.wav",
    "Actor_02/03-01-08-02-02-02-02.wav",
]


def wav_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, 800).astype(np.float32)
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_zip(members: dict[str, bytes] | list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items() if isinstance(members, dict) else members:
            zf.writestr(name, data)
    return buf.getvalue()


WAVS = {name: wav_bytes(i) for i, name in enumerate(NAMES)}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        server = self.server
        mode, _, name = self.path.lstrip("/").partition("/")
        server.requests.append((self.path, self.headers.get("Range")))
        if mode == "slow":
            time.sleep(1.0)
        body = server.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        asked = self.headers.get("Range")
        if asked and mode in ("range", "flaky"):
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode == "flaky" and not asked:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture(scope="module")
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None  # a client that timed out hung up
    server.files = {}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def serve(http_server):
    """``serve(zip_bytes, mode) -> (url, md5)``; the server's request log starts empty."""
    http_server.files.clear()
    http_server.requests.clear()

    def _serve(body: bytes, mode: str = "range") -> tuple[str, str]:
        name = f"{len(http_server.files)}/{ARCHIVE}"
        http_server.files[name] = body
        host, port = http_server.server_address
        return f"http://{host}:{port}/{mode}/{name}", hashlib.md5(body).hexdigest()

    _serve.requests = http_server.requests
    return _serve


def config(out: Path, url: str, md5: str, *extra: str):
    return load_config("download", [f"out={out}", f"url={url}", f"md5={md5}", *extra])


def assert_tree(out: Path, names=NAMES) -> None:
    found = sorted(str(p.relative_to(out)) for p in out.glob("Actor_*/*.wav"))
    assert found == sorted(names)
    for name in names:
        assert (out / name).read_bytes() == WAVS[name]
        audio, rate = sf.read(out / name)
        assert rate == 16000 and len(audio) == 800


def test_downloads_verifies_and_extracts(serve, tmp_path):
    body = make_zip(WAVS)
    url, md5 = serve(body)
    out = tmp_path / "ravdess"

    result = download.run(config(out, url, md5))

    assert_tree(out)
    assert result.files == 4 and not result.skipped
    assert result.bytes_received == len(body) and result.resumed_from == 0
    assert (out / ARCHIVE).read_bytes() == body
    assert not (out / (ARCHIVE + ".part")).exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".extract-")] == []
    assert serve.requests == [(urlsplit(url).path, None)]


@pytest.mark.parametrize("mode", ["range", "plain"])
def test_resumes_a_partial_download(serve, tmp_path, mode):
    body = make_zip(WAVS)
    url, md5 = serve(body, mode)
    out = tmp_path / "ravdess"
    out.mkdir()
    half = len(body) // 2
    (out / (ARCHIVE + ".part")).write_bytes(body[:half])

    result = download.run(config(out, url, md5))

    assert [r for _, r in serve.requests] == [f"bytes={half}-"]
    if mode == "range":  # 206: only the second half travels and is appended
        assert (result.resumed_from, result.bytes_received) == (half, len(body) - half)
    else:  # Range ignored, 200: the partial file is rewritten from the start
        assert (result.resumed_from, result.bytes_received) == (0, len(body))
    assert (out / ARCHIVE).read_bytes() == body
    assert_tree(out)


def test_interrupted_download_resumes_on_rerun(serve, tmp_path):
    body = make_zip(WAVS)
    url, md5 = serve(body, "flaky")
    out = tmp_path / "ravdess"
    part = out / (ARCHIVE + ".part")

    with pytest.raises(download.DownloadError, match=r"download (failed|incomplete): http://"):
        download.run(config(out, url, md5))
    assert part.stat().st_size == len(body) // 2
    assert not (out / ARCHIVE).exists() and not list(out.glob("Actor_*"))

    result = download.run(config(out, url, md5))

    assert [r for _, r in serve.requests] == [None, f"bytes={len(body) // 2}-"]
    assert result.resumed_from == len(body) // 2
    assert_tree(out)


def test_wrong_checksum_extracts_nothing_and_rerun_downloads_again(serve, tmp_path):
    body = make_zip(WAVS)
    url, md5 = serve(body)
    out = tmp_path / "ravdess"
    wrong = "f" * 32

    with pytest.raises(download.DownloadError) as err:
        download.run(config(out, url, wrong))

    message = str(err.value)
    assert "\n" not in message
    assert str(out / ARCHIVE) in message and wrong in message and md5 in message
    assert sorted(p.name for p in out.iterdir()) == [ARCHIVE + ".bad"]

    download.run(config(out, url, md5))
    assert len(serve.requests) == 2
    assert_tree(out)


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "evil",
    ["../evil.wav", "Actor_01/../../evil.wav", "ABSOLUTE", "C:/evil.wav", "SYMLINK"],
)
def test_unsafe_member_refuses_the_whole_archive(serve, tmp_path, evil):
    out = tmp_path / "deep" / "ravdess"
    absolute = tmp_path / "abs" / "evil.wav"
    member: zipfile.ZipInfo | str = {"ABSOLUTE": str(absolute)}.get(evil, evil)
    if evil == "SYMLINK":
        member = _symlink("Actor_02/link.wav")
    body = make_zip([(NAMES[0], WAVS[NAMES[0]]), (member, b"../../../etc/passwd")])
    url, md5 = serve(body)

    with pytest.raises(download.DownloadError, match=r"unsafe archive .*member") as err:
        download.run(config(out, url, md5))

    shown = member.filename if isinstance(member, zipfile.ZipInfo) else member
    assert repr(shown) in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == [ARCHIVE]  # verified zip kept, nothing else
    assert not absolute.exists()
    assert [p for p in tmp_path.rglob("*evil*")] == []
    assert [p for p in tmp_path.rglob("*.wav")] == []


def test_second_run_downloads_nothing(serve, tmp_path):
    url, md5 = serve(make_zip(WAVS))
    out = tmp_path / "ravdess"
    download.run(config(out, url, md5))
    assert len(serve.requests) == 1

    again = download.run(config(out, url, md5))

    assert again.skipped and again.bytes_received == 0 and again.files == 4
    assert len(serve.requests) == 1

    # A damaged tree is noticed and re-extracted from the kept zip, still without a download.
    (out / NAMES[3]).unlink()
    repaired = download.run(config(out, url, md5))
    assert not repaired.skipped and repaired.bytes_received == 0
    assert len(serve.requests) == 1
    assert_tree(out)


def test_single_wrapping_folder_is_looked_through(serve, tmp_path):
    url, md5 = serve(make_zip({f"Audio_Speech_Actors_01-24/{n}": b for n, b in WAVS.items()}))
    out = tmp_path / "ravdess"

    download.run(config(out, url, md5))

    assert_tree(out)
    assert not (out / "Audio_Speech_Actors_01-24").exists()


def test_http_error_and_timeout_are_one_line_naming_the_url(serve, tmp_path):
    url, md5 = serve(make_zip(WAVS))
    missing = url.replace(ARCHIVE, "missing.zip")
    with pytest.raises(download.DownloadError) as err:
        download.run(config(tmp_path / "a", missing, md5))
    assert str(err.value) == f"download failed: {missing}: HTTP 404 Not Found"

    slow = url.replace("/range/", "/slow/")
    with pytest.raises(download.DownloadError) as err:
        download.run(config(tmp_path / "b", slow, md5, "timeout_s=0.2"))
    assert str(err.value) == f"download failed: {slow}: no answer within 0.2 s (timeout_s)"


# ----------------------------------------------------------------------------------------------
# Hostile inputs: credentials in the URL, zip bombs, odd archive names, OS errors


def test_credentials_in_the_url_are_sent_but_never_shown(serve, tmp_path):
    url, md5 = serve(make_zip(WAVS))
    secret_url = url.replace("http://", "http://user:s3cr%2Fet@")
    download.run(config(tmp_path / "ok", secret_url, md5))  # sent as a Basic header
    assert_tree(tmp_path / "ok")

    missing = secret_url.replace(ARCHIVE, "missing.zip")
    with pytest.raises(download.DownloadError) as err:
        download.run(config(tmp_path / "a", missing, md5))
    assert "s3cr" not in str(err.value) and "***@" in str(err.value)
    # The report's case: an unreachable host, and a password that urllib would read as a port.
    for bad in ("http://user:secret@127.0.0.1:1/x.zip", "http://user:sec/ret@nohost.invalid/x"):
        with pytest.raises(download.DownloadError) as err:
            download.run(config(tmp_path / "b", bad, md5, "timeout_s=2"))
        assert "secret" not in str(err.value) and "ret@" not in str(err.value)
        assert "\n" not in str(err.value)


def test_a_zip_bomb_member_is_refused(serve, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(NAMES[0], WAVS[NAMES[0]])
        zf.writestr("Actor_01/bomb.wav", bytes(16 << 20))  # 16 MiB of zeros: ~1000:1
    url, md5 = serve(buf.getvalue())
    with pytest.raises(download.DownloadError, match=r"'Actor_01/bomb.wav': compression ratio"):
        download.run(config(tmp_path, url, md5))
    assert not list(tmp_path.glob("Actor_*"))


def test_an_archive_over_the_size_cap_is_refused(serve, tmp_path, monkeypatch):
    url, md5 = serve(make_zip(WAVS))
    monkeypatch.setattr(download, "MAX_EXTRACTED_BYTES", 1000)  # the real cap is 8 GiB
    with pytest.raises(download.DownloadError, match=r"bytes unpacked \(limits"):
        download.run(config(tmp_path, url, md5))
    assert not list(tmp_path.glob("Actor_*"))


@pytest.mark.parametrize("name", ["/abs/path.zip", "../x.zip", "a/b.zip", ".."])
def test_archive_name_must_be_a_plain_file_name(tmp_path, name):
    from knd.config.schema import ConfigError

    with pytest.raises(ConfigError, match="archive_name: must be a plain name"):
        config(tmp_path, "http://127.0.0.1:1/x.zip", "0" * 32, f"archive_name={name}")
    cfg = dataclasses.replace(
        config(tmp_path, "http://127.0.0.1:1/x.zip", "0" * 32), archive_name=name
    )
    with pytest.raises(download.DownloadError, match="archive_name must be a plain file name"):
        download.run(cfg)


def test_os_errors_are_one_line_download_errors(serve, tmp_path):
    url, md5 = serve(make_zip(WAVS))
    clash = tmp_path / "file"
    clash.write_text("a file where the output folder should be")
    with pytest.raises(download.DownloadError, match=r"^download failed: .*file.*: File exists"):
        download.run(config(clash, url, md5))
    out = tmp_path / "out"
    (out / ARCHIVE).mkdir(parents=True)  # a folder under the archive's name
    with pytest.raises(download.DownloadError, match=r"^download failed: .*: Is a directory$"):
        download.run(config(out, url, md5))


def test_the_cli_prints_os_errors_in_one_line(tmp_path, capsys):
    from knd.cli import main

    clash = tmp_path / "file"
    clash.write_text("x")
    assert main(["synth", f"out={clash}/corpus", "actors=1", "workers=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"knd synth: {clash}/corpus/Actor_01: Not a directory"


@pytest.mark.parametrize("corpus", sorted(download.BY_HAND))
def test_a_corpus_without_a_verified_archive_says_where_to_fetch_it_and_downloads_nothing(
    serve, tmp_path, corpus
):
    url, md5 = serve(make_zip(list(WAVS.items())))
    out = tmp_path / corpus
    with pytest.raises(download.DownloadError) as err:
        download.run(config(out, url, md5, f"corpus={corpus}"))
    message = str(err.value)
    assert "\n" not in message and download.BY_HAND[corpus].where in message
    assert f"knd prepare corpus={corpus} " in message
    assert not serve.requests and not out.exists()
    # The guide points to the same place.
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "corpora.md").read_text()
    assert download.BY_HAND[corpus].where.rstrip("/") in guide
