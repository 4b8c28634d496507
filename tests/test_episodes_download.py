"""Downloading and converting Bao et al.'s data.zip, served from a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import socket
import threading
import zipfile

import pytest

from episodes import DataError, EpisodeSampler, download_datasets, load_dataset, make_episode_file
from episodes.download import convert_bao_file

try:
    from episodes_fixtures import bao_lines, bao_zip
except ImportError:  # tests/ imported as a package
    from tests.episodes_fixtures import bao_lines, bao_zip


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path / "www"`` on 127.0.0.1; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("METAPROMPT_DATA", raising=False)
    monkeypatch.setenv("METAPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_download_convert_and_load(tmp_path, server):
    bao_zip(tmp_path / "www" / "data.zip")
    paths = download_datasets(url=f"{server}/data.zip", progress=False)
    folder = tmp_path / "cache" / "data"
    assert paths == {n: folder / f"{n}.jsonl.gz" for n in ("huffpost", "amazon", "reuters", "20news")}
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{n}.jsonl.gz" for n in paths] + ["splits.json", "verbalizers.json"])
    first = [json.loads(line) for line in gzip.decompress(paths["reuters"].read_bytes()).decode().splitlines()][:2]
    assert first == [{"text": "Raw REUTERS 0 of class 0.", "label": 0}, {"text": "Raw REUTERS 1 of class 1.", "label": 1}]
    amazon = load_dataset("amazon")  # found in the download cache
    assert len(amazon) == 24 * 25 and amazon.texts[0] == "amazon 0 class 0"
    assert amazon.label_words[13] == ["home", "kitchen"]
    episode = EpisodeSampler(amazon.labels, amazon.splits.classes("test"), 5, 5, 15, seed=0).episode(0)
    assert set(episode.classes) <= {0, 5, 14, 15, 8, 10, 16, 17, 21}
    # Deterministic output: converting again gives the same bytes (and so the same episode files).
    before = {n: p.read_bytes() for n, p in paths.items()}
    download_datasets(url=f"{server}/data.zip", progress=False, force=True)
    assert {n: p.read_bytes() for n, p in paths.items()} == before
    make_episode_file(amazon, "test", 5, 1, 1, count=2, seed=0)


def test_present_files_are_skipped(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "reuters.jsonl.gz").write_bytes(b"kept")
    # Nothing to fetch: the (unreachable) URL is never opened.
    paths = download_datasets(folder, url="http://127.0.0.1:9/none.zip", names=["reuters"], progress=False)
    assert paths == {"reuters": folder / "reuters.jsonl.gz"} and (folder / "reuters.jsonl.gz").read_bytes() == b"kept"


def test_local_zip_path(tmp_path):
    archive = bao_zip(tmp_path / "saved.zip", names=["reuters"])
    paths = download_datasets(tmp_path / "d", url=str(archive), names=["reuters"])
    assert load_dataset("reuters", tmp_path / "d").path == paths["reuters"]


def test_http_404(tmp_path, server):
    with pytest.raises(DataError) as err:
        download_datasets(tmp_path / "d", url=f"{server}/missing.zip", progress=False)
    text = str(err.value)
    assert f"{server}/missing.zip" in text and "HTTP 404" in text and str(tmp_path / "d") in text
    assert not [p for p in (tmp_path / "d").iterdir() if p.suffix == ".part"]


def test_connection_refused(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match=f"Downloading http://127.0.0.1:{port}/data.zip failed"):
        download_datasets(tmp_path / "d", url=f"http://127.0.0.1:{port}/data.zip", timeout=5, progress=False)


def test_not_a_zip(tmp_path, server):
    (tmp_path / "www" / "data.zip").write_text("<html>Not found</html>")
    with pytest.raises(DataError, match="not a readable zip archive"):
        download_datasets(tmp_path / "d", url=f"{server}/data.zip", progress=False)


def test_member_missing(tmp_path, server):
    bao_zip(tmp_path / "www" / "data.zip", names=["huffpost", "reuters"])
    with pytest.raises(DataError, match=r"has no amazon\.json \(it holds: data/huffpost\.json, data/reuters\.json\)"):
        download_datasets(tmp_path / "d", url=f"{server}/data.zip", progress=False)


def test_bad_member_line(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x/reuters.json", bao_lines(31, 1, with_raw=False) + b'{"text": ["a"], "label": "one"}\n')
    with pytest.raises(DataError, match=r"data\.zip:x/reuters\.json:32: field 'label'"):
        download_datasets(tmp_path / "d", url=str(archive), names=["reuters"])
    assert not (tmp_path / "d" / "reuters.jsonl.gz").exists()


def test_convert_single_file(tmp_path):
    src = tmp_path / "amazon.json"
    src.write_bytes(bao_lines(24, 2, with_raw=False) + b'{"text": [], "label": 3}\n')
    with pytest.warns(UserWarning, match="skipped 1 example"):
        out = convert_bao_file(src, tmp_path / "d" / "amazon.jsonl.gz")
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == 48
