"""Tests of nbhelpers.svhn: download and loading against a local HTTP server.

No external network: a small HTTP server on 127.0.0.1 serves tiny files in the
real SVHN .mat layout ('X' (32, 32, 3, N) uint8, 'y' (N, 1) with labels 1..10),
and the expected MD5 sums are overridden to match them.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import stat
import threading

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from nbhelpers import svhn
from nbhelpers.svhn import SVHNUnavailable, load_svhn, svhn_dir, svhn_present

N_IMAGES = 20


# --------------------------------------------------------------------------- helpers


def make_mat(n: int = N_IMAGES, seed: int = 0, labels=None) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Bytes of a .mat file in SVHN's layout, with the arrays written into it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    if labels is None:
        labels = np.arange(n) % 10 + 1  # every label 1..10 occurs
    y = np.asarray(labels, dtype=np.uint8).reshape(n, 1)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": x, "y": y})
    return buffer.getvalue(), x, y


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (name fixed by http.server)
        self.server.requests.append(self.path)
        entry = self.server.files.get(self.path)
        if entry is None:
            self.send_error(404, "Not Found")
            return
        data, truncate = entry
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if truncate else data)
        self.close_connection = True

    def log_message(self, *args):
        pass


class FileServer:
    """HTTP server on 127.0.0.1 (free port) serving ``/housenumbers/<name>``."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files = {}
        self.httpd.requests = []
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/housenumbers/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def serve(self, name: str, data: bytes, *, truncate: bool = False) -> None:
        self.httpd.files[f"/housenumbers/{name}"] = (data, truncate)

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def server(request):
    srv = FileServer()
    request.addfinalizer(srv.stop)
    return srv


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("NBHELPERS_DATA_DIR", "NBHELPERS_SVHN_URL", "NBHELPERS_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never touch the real ~/.cache


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_manual_instructions(message: str, folder, md5: str) -> None:
    for part in (
        "train_32x32.mat",
        "test_32x32.mat",
        str(folder),
        md5,
        svhn.DEFAULT_SVHN_URL + "train_32x32.mat",
        'source="synthetic"',
        "synthetic stand-in",
    ):
        assert part in message, f"{part!r} missing from:\n{message}"


# --------------------------------------------------------------------------- constants


def test_constants_match_torchvision():
    assert svhn.SVHN_SPLIT_SIZES == {"train": 73257, "test": 26032}
    for split, (name, md5) in svhn.SVHN_FILES.items():
        assert torchvision.datasets.SVHN.split_list[split][1:] == [name, md5]
    assert issubclass(SVHNUnavailable, RuntimeError)


# --------------------------------------------------------------------------- success


def test_download_then_load(server, tmp_path):
    data, x, y = make_mat()
    server.serve("train_32x32.mat", data)
    images, labels = load_svhn("train", tmp_path, base_url=server.base_url, md5=md5_of(data))

    assert images.dtype == torch.uint8 and images.shape == (N_IMAGES, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (N_IMAGES,)
    assert images.is_contiguous()
    # layout: images[n, c, h, w] == X[h, w, c, n] as written
    assert torch.equal(images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))
    expected = y.reshape(-1).astype(np.int64)
    expected[expected == 10] = 0
    assert labels.tolist() == expected.tolist()
    assert set(labels.tolist()) == set(range(10))

    folder = tmp_path / "svhn"
    assert files_in(folder) == ["train_32x32.mat"]  # no temporary .part file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((folder / "train_32x32.mat").stat().st_mode) == 0o666 & ~umask
    assert server.requests == ["/housenumbers/train_32x32.mat"]
    assert svhn_present("train", tmp_path, md5=md5_of(data))
    assert not svhn_present("train", tmp_path)  # torchvision's sum: not the real file
    assert not svhn_present("test", tmp_path, md5=md5_of(data))


def test_present_file_loads_without_server(server, tmp_path):
    data, x, _ = make_mat(seed=3)
    folder = svhn_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "test_32x32.mat").write_bytes(data)
    server.stop()  # nothing to talk to
    for download in (False, True):
        images, labels = load_svhn(
            "test", tmp_path, base_url=server.base_url, md5=md5_of(data), download=download
        )
        assert torch.equal(images[5], torch.from_numpy(x[..., 5].transpose(2, 0, 1).copy()))
        assert labels.shape == (N_IMAGES,)
    assert server.requests == []


# --------------------------------------------------------------------------- failures


def test_connection_refused(server, tmp_path):
    server.stop()
    with pytest.raises(SVHNUnavailable) as info:
        load_svhn("train", tmp_path, base_url=server.base_url, md5="0" * 32)
    message = str(info.value)
    assert server.base_url + "train_32x32.mat" in message
    assert "refused" in message
    assert_manual_instructions(message, tmp_path / "svhn", "0" * 32)
    assert files_in(tmp_path / "svhn") == []


def test_http_404(server, tmp_path):
    with pytest.raises(SVHNUnavailable, match="HTTP 404") as info:
        load_svhn("test", tmp_path, base_url=server.base_url)
    assert_manual_instructions(str(info.value), tmp_path / "svhn", svhn.SVHN_FILES["test"][1])
    assert files_in(tmp_path / "svhn") == []


def test_checksum_mismatch(server, tmp_path):
    data, _, _ = make_mat()
    server.serve("train_32x32.mat", data)
    wrong = md5_of(b"something else")
    with pytest.raises(SVHNUnavailable, match="MD5") as info:
        load_svhn("train", tmp_path, base_url=server.base_url, md5=wrong)
    assert wrong in str(info.value)
    assert files_in(tmp_path / "svhn") == []


def test_truncated_transfer_leaves_no_partial_file(server, tmp_path):
    data, _, _ = make_mat()
    server.serve("train_32x32.mat", data, truncate=True)
    with pytest.raises(SVHNUnavailable, match="stopped early") as info:
        load_svhn("train", tmp_path, base_url=server.base_url, md5=md5_of(data))
    assert f"{len(data) // 2:,} of {len(data):,} bytes" in str(info.value)
    assert files_in(tmp_path / "svhn") == []


@pytest.mark.parametrize(
    "payload",
    [b"<html>this is not a .mat file</html>" * 50, make_mat()[0][: len(make_mat()[0]) // 2]],
    ids=["not-mat", "truncated-mat"],
)
def test_corrupt_file_with_matching_md5(server, tmp_path, payload):
    server.serve("train_32x32.mat", payload)
    with pytest.raises(SVHNUnavailable, match="damaged") as info:
        load_svhn("train", tmp_path, base_url=server.base_url, md5=md5_of(payload))
    assert "train_32x32.mat.corrupt" in str(info.value)
    assert files_in(tmp_path / "svhn") == ["train_32x32.mat.corrupt"]
    assert not svhn_present("train", tmp_path, md5=md5_of(payload))


def test_labels_out_of_range_are_rejected(server, tmp_path):
    data, _, _ = make_mat(n=4, labels=[1, 2, 11, 3])
    server.serve("test_32x32.mat", data)
    with pytest.raises(SVHNUnavailable, match="labels run from"):
        load_svhn("test", tmp_path, base_url=server.base_url, md5=md5_of(data))
    assert files_in(tmp_path / "svhn") == ["test_32x32.mat.corrupt"]


def test_wrong_file_in_place_is_renamed_then_downloaded(server, tmp_path):
    data, x, _ = make_mat(seed=7)
    folder = svhn_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "train_32x32.mat").write_bytes(data[:100])  # a partial copy put there by hand
    with pytest.raises(SVHNUnavailable, match="wrong MD5 sum") as info:
        load_svhn("train", tmp_path, md5=md5_of(data), download=False)
    assert "download=False" in str(info.value)
    assert files_in(folder) == ["train_32x32.mat.corrupt"]

    server.serve("train_32x32.mat", data)
    images, _ = load_svhn("train", tmp_path, base_url=server.base_url, md5=md5_of(data))
    assert torch.equal(images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))
    assert files_in(folder) == ["train_32x32.mat", "train_32x32.mat.corrupt"]


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(url, dest, timeout, progress):
        dest.write_bytes(b"the first megabyte")
        raise KeyboardInterrupt

    monkeypatch.setattr(svhn, "_fetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_svhn("test", tmp_path, base_url="http://127.0.0.1:9/")
    assert files_in(tmp_path / "svhn") == []


def test_missing_without_download(tmp_path):
    with pytest.raises(SVHNUnavailable, match="download=False") as info:
        load_svhn("test", tmp_path, download=False)
    assert_manual_instructions(str(info.value), tmp_path / "svhn", svhn.SVHN_FILES["test"][1])
    assert not (tmp_path / "svhn").exists()


def test_silent_server_times_out(tmp_path, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection in the kernel, never answers
    try:
        monkeypatch.setenv("NBHELPERS_DOWNLOAD_TIMEOUT", "0.3")
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(SVHNUnavailable, match=r"no answer within 0\.3 s"):
            load_svhn("test", tmp_path, base_url=url)
    finally:
        listener.close()
    assert files_in(tmp_path / "svhn") == []


# --------------------------------------------------------------------------- settings


def test_environment_overrides(server, tmp_path, monkeypatch):
    data, _, _ = make_mat(n=5)
    server.serve("test_32x32.mat", data)
    monkeypatch.setenv("NBHELPERS_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("NBHELPERS_SVHN_URL", server.base_url.rstrip("/"))  # slash is optional
    monkeypatch.setenv("NBHELPERS_DOWNLOAD_TIMEOUT", "5")

    assert svhn_dir() == tmp_path / "env-data" / "svhn"
    images, _ = load_svhn("test", md5=md5_of(data))
    assert images.shape == (5, 3, 32, 32)
    assert files_in(tmp_path / "env-data" / "svhn") == ["test_32x32.mat"]
    assert server.requests == ["/housenumbers/test_32x32.mat"]
    assert svhn_dir(tmp_path / "arg") == tmp_path / "arg" / "svhn"  # the argument wins


def test_default_data_dir(tmp_path):
    assert svhn_dir() == tmp_path / "home" / ".cache" / "nbhelpers" / "svhn"


def test_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"'valid'.*'train', 'test'"):
        load_svhn("valid", tmp_path)
    with pytest.raises(ValueError, match="'extra'"):
        svhn_present("extra", tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="a_file"):
        svhn_dir(a_file)
    with pytest.raises(TypeError, match="int"):
        svhn_dir(3)
    with pytest.raises(ValueError, match="'not a url'"):
        load_svhn("train", tmp_path, base_url="not a url")
    with pytest.raises(ValueError, match="'xyz'"):
        load_svhn("train", tmp_path, md5="xyz")
    monkeypatch.setenv("NBHELPERS_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NBHELPERS_DOWNLOAD_TIMEOUT='soon'"):
        load_svhn("train", tmp_path)
    assert not (tmp_path / "svhn").exists()
