"""Real SVHN through torchvision: data directory, download and clear errors.

SVHN (Netzer et al., 2011, "Reading Digits in Natural Images with Unsupervised
Feature Learning", http://ufldl.stanford.edu/housenumbers/) comes as two MATLAB
files, ``train_32x32.mat`` (73,257 images) and ``test_32x32.mat`` (26,032
images). File names, MD5 sums and the reading of the ``.mat`` files come from
:class:`torchvision.datasets.SVHN`; checksums use
:func:`torchvision.datasets.utils.check_integrity`.

The download itself is a short function of our own, because
:func:`torchvision.datasets.utils.download_url` has no timeout (an offline
machine would hang), always draws a progress bar, and writes straight to the
final file name (an interrupted download would leave a partial file in place).
Here a download goes to a temporary ``*.part`` file next to its target
(:func:`nbhelpers.files.atomic_path`), is checked (size, MD5) and only then renamed
into place; a file in place that is damaged is renamed to ``<name>.corrupt``.

Settings (argument first, then environment variable, then default):

- data directory: ``data_dir`` / ``NBHELPERS_DATA_DIR`` / ``~/.cache/nbhelpers``;
  the SVHN files live in ``<data_dir>/svhn/``.
- base URL: ``base_url`` / ``NBHELPERS_SVHN_URL`` / ``http://ufldl.stanford.edu/housenumbers/``.
- timeout in seconds: ``timeout`` / ``NBHELPERS_DOWNLOAD_TIMEOUT`` / 20.

Everything that keeps the real data from loading raises :class:`SVHNUnavailable`
with what happened and how to put the files in place by hand.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.datasets.utils import check_integrity

from nbhelpers import validate
from nbhelpers.env import default_data_dir
from nbhelpers.files import atomic_path

#: Number of images per split of the official files (also the synthetic stand-in's sizes).
SVHN_SPLIT_SIZES = {"train": 73257, "test": 26032}

#: Default base URL of the SVHN files (the dataset's home page).
DEFAULT_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

#: Default timeout in seconds for connecting and for each read of a download.
DEFAULT_DOWNLOAD_TIMEOUT = 20.0

#: split -> (file name, MD5 sum), taken from ``torchvision.datasets.SVHN.split_list``.
SVHN_FILES = {
    split: tuple(torchvision.datasets.SVHN.split_list[split][1:]) for split in SVHN_SPLIT_SIZES
}

# Approximate sizes of the official files, for the instructions only.
_APPROX_MB = {"train": 182, "test": 64}

_ENV_DATA_DIR = "NBHELPERS_DATA_DIR"
_ENV_URL = "NBHELPERS_SVHN_URL"
_ENV_TIMEOUT = "NBHELPERS_DOWNLOAD_TIMEOUT"
_URL_SCHEMES = ("http", "https", "ftp", "file")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK_BYTES = 1 << 20


class SVHNUnavailable(RuntimeError):
    """Real SVHN could not be loaded (missing, download failed, or a damaged file).

    The message says what happened and how to put the files in place by hand.
    """


# --------------------------------------------------------------------------- settings


def svhn_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Directory that holds the SVHN files: ``<data_dir>/svhn``.

    Args:
        data_dir: the data directory; ``None`` takes :func:`nbhelpers.env.default_data_dir`
            (``NBHELPERS_DATA_DIR`` or ``~/.cache/nbhelpers``). A leading ``~`` is expanded.

    Returns:
        The path (not created here).

    Raises:
        TypeError: ``data_dir`` is not a str or path (raised by ``pathlib``).
        ValueError: ``data_dir`` or ``<data_dir>/svhn`` exists and is a file.
    """
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    for path in (root, root / "svhn"):
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"{path} is a file, not a directory; the SVHN files go to <data dir>/svhn/ "
                f"(give data_dir=... or {_ENV_DATA_DIR} a directory; it is created if missing)."
            )
    return root / "svhn"


def _base_url(base_url: str | None) -> str:
    url = base_url if base_url is not None else os.environ.get(_ENV_URL) or DEFAULT_SVHN_URL
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in _URL_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in _URL_SCHEMES)
        name = "base_url" if base_url is not None else _ENV_URL
        raise validate.invalid(name, url, f"a URL starting with {schemes}")
    return url if url.endswith("/") else url + "/"


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return validate.number("timeout", timeout, 0, low_open=True)
    value = os.environ.get(_ENV_TIMEOUT, "").strip() or DEFAULT_DOWNLOAD_TIMEOUT
    with contextlib.suppress(ValueError):  # text that is no number is reported as it is
        value = float(value)
    return validate.number(_ENV_TIMEOUT, value, 0, low_open=True)


def _md5(split: str, md5: str | None) -> str:
    if md5 is None:
        return SVHN_FILES[split][1]
    if not isinstance(md5, str) or not _MD5_RE.match(md5.lower()):
        raise validate.invalid("md5", md5, "32 hexadecimal digits or None")
    return md5.lower()


# --------------------------------------------------------------------------- messages


def manual_install_instructions(
    data_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    md5: dict[str, str] | None = None,
) -> str:
    """How to put the SVHN files in place by hand (learner-facing text).

    Args:
        data_dir: as in :func:`svhn_dir`.
        base_url: as in :func:`load_svhn`; the official URL is always listed too.
        md5: optional ``{split: md5}`` overrides of the expected sums.

    Returns:
        A multi-line string: which URLs, which file names, which directory,
        the MD5 sums, and the offline alternative ``source="synthetic"``.
    """
    url, md5, train = _base_url(base_url), md5 or {}, SVHN_FILES["train"][0]
    lines = [f"To use real SVHN without the download, put these files into {svhn_dir(data_dir)}/ :"]
    for split, (name, official_md5) in SVHN_FILES.items():
        sources = dict.fromkeys([url + name, DEFAULT_SVHN_URL + name])  # in order, no repeats
        lines.append(
            f"  - {name} (about {_APPROX_MB[split]} MB) from {' or '.join(sources)}\n"
            f"    MD5 sum: {md5.get(split, official_md5)}"
        )
    lines += [
        f"Check a file with `md5sum {train}` (Linux), `md5 {train}` (macOS) or "
        f"`certutil -hashfile {train} MD5` (Windows).",
        f"Another data directory: pass data_dir=... or set {_ENV_DATA_DIR} (files go to "
        f"<dir>/svhn/); another mirror: set {_ENV_URL}.",
        'No network? Use the synthetic stand-in: load_data(source="synthetic").',
    ]
    return "\n".join(lines)


def _describe(exc: BaseException, timeout: float) -> str:
    """What went wrong with a download, in words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s (set {_ENV_TIMEOUT} to wait longer)"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused ({reason})"
    if isinstance(reason, socket.gaierror):
        return f"the host name could not be resolved, is the network down? ({reason})"
    return f"{type(reason).__name__}: {reason}"


# --------------------------------------------------------------------------- download


def _quarantine(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt`` so it no longer looks valid."""
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    return target


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into the file ``dest``.

    Raises the underlying ``OSError`` / ``urllib.error.URLError`` /
    ``http.client.HTTPException``, or ``EOFError`` when fewer bytes arrive than
    announced by ``Content-Length``.
    """
    from tqdm.auto import tqdm

    headers = {"User-Agent": torchvision.datasets.utils.USER_AGENT}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as fh:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        name = url.rsplit("/", 1)[-1]
        with tqdm(
            total=announced, unit="B", unit_scale=True, desc=name, disable=not progress
        ) as bar:
            while chunk := response.read(_CHUNK_BYTES):
                bar.update(fh.write(chunk))
    received = dest.stat().st_size
    if announced is not None and received < announced:
        raise EOFError(f"the download stopped early: {received:,} of {announced:,} bytes arrived")


def _download(split: str, path: Path, url: str, md5: str, timeout: float, progress: bool, fail):
    """Download one split to ``path`` through a temporary ``.part`` file next to it, which
    replaces ``path`` only once its MD5 sum is right (:func:`nbhelpers.files.atomic_path`)."""
    try:
        with atomic_path(path, suffix=".part") as part:
            _fetch(url, part, timeout, progress)
            if not check_integrity(part, md5):
                raise fail(
                    f"The download of SVHN {split!r} from {url} is damaged or incomplete: its MD5 "
                    f"sum does not match {md5} ({part.stat().st_size:,} bytes received). The "
                    "file was discarded."
                )
    except (OSError, http.client.HTTPException, EOFError) as exc:
        why = _describe(exc, timeout)
        raise fail(f"Could not download SVHN {split!r} from {url}: {why}.") from exc


# --------------------------------------------------------------------------- loading


class _SVHNFile(torchvision.datasets.SVHN):
    """``torchvision.datasets.SVHN`` reading a file whose MD5 sum has just been checked."""

    def _check_integrity(self) -> bool:
        # load_svhn has checked the MD5 sum just before; hashing 182 MB again costs ~0.4 s.
        return check_integrity(os.path.join(self.root, self.filename), None)


def _read(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split with torchvision and check shapes, dtype and label range.

    Raises ``ValueError`` describing what is wrong with the file.
    """
    try:
        data = _SVHNFile(folder, split=split, download=False)
    except Exception as exc:  # scipy raises several types for damaged files
        raise ValueError(
            f"it cannot be read as a MATLAB .mat file ({type(exc).__name__}: {exc})"
        ) from exc
    images, labels = np.asarray(data.data), np.asarray(data.labels).reshape(-1)
    if images.shape[1:] != (3, 32, 32) or images.dtype != np.uint8:
        raise ValueError(
            f"its 'X' array has shape {images.shape} {images.dtype} after reading; "
            "SVHN's is (32, 32, 3, N) uint8"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"it has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(
            f"its labels run from {labels.min()} to {labels.max()}; SVHN's run from 1 to 10"
        )
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def svhn_present(
    split: str, data_dir: str | os.PathLike | None = None, *, md5: str | None = None
) -> bool:
    """Whether the SVHN file of ``split`` is on disk with the right MD5 sum (no download, no
    reading as ``.mat``; hashing the train file takes about half a second).

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: as in :func:`svhn_dir`.
        md5: expected sum instead of torchvision's (for mirrors and tests).

    Returns:
        ``True`` when ``<data_dir>/svhn/<file>`` exists and its MD5 sum matches.

    Raises:
        ValueError: bad ``split``, ``md5`` or ``data_dir`` (see :func:`svhn_dir`).
    """
    expected = _md5(validate.one_of("split", split, SVHN_SPLIT_SIZES), md5)
    return check_integrity(svhn_dir(data_dir) / SVHN_FILES[split][0], expected)


def load_svhn(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    base_url: str | None = None,
    md5: str | None = None,
    progress: bool = False,
    timeout: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of real SVHN, downloading it first when it is missing.

    Args:
        split: ``"train"`` (73,257 images) or ``"test"`` (26,032 images).
        data_dir: data directory; the file is ``<data_dir>/svhn/train_32x32.mat``
            or ``test_32x32.mat``. ``None``: ``NBHELPERS_DATA_DIR``, else ``~/.cache/nbhelpers``.
        download: download the file when it is missing or damaged.
        base_url: where the files are; ``None``: ``NBHELPERS_SVHN_URL``, else
            ``http://ufldl.stanford.edu/housenumbers/``. The file name is appended.
        md5: expected MD5 sum of the file; ``None``: torchvision's
            (``torchvision.datasets.SVHN.split_list``).
        progress: show a download progress bar (bytes).
        timeout: seconds to wait for the connection and for each read;
            ``None``: ``NBHELPERS_DOWNLOAD_TIMEOUT``, else 20.

    Returns:
        ``(images, labels)``: images ``torch.uint8`` of shape ``(N, 3, 32, 32)``
        (channels R, G, B; rows top to bottom), labels ``torch.int64`` of shape
        ``(N,)`` in 0..9 (SVHN's label 10 for the digit 0 is mapped to 0, as
        torchvision does). Both on the CPU.

    Raises:
        ValueError / TypeError: bad ``split``, ``data_dir``, ``base_url``,
            ``md5`` or ``timeout`` (the message names the value).
        SVHNUnavailable: the file is missing and ``download=False``, the
            download failed (no network, connection refused, HTTP error,
            timeout, partial file, MD5 mismatch), or the file cannot be read
            as an SVHN ``.mat`` file. A damaged file in place is renamed to
            ``<name>.corrupt``; a failed download leaves nothing behind.
    """
    expected = _md5(validate.one_of("split", split, SVHN_SPLIT_SIZES), md5)
    url_base, seconds, folder = _base_url(base_url), _timeout(timeout), svhn_dir(data_dir)
    path = folder / SVHN_FILES[split][0]
    note = ""
    if path.is_file() and not check_integrity(path, expected):
        moved = _quarantine(path)
        note = (
            f"The file in place had the wrong MD5 sum (expected {expected}); it was renamed to "
            f"{moved.name}. "
        )

    def fail(what: str) -> SVHNUnavailable:
        overrides = {split: expected} if expected != SVHN_FILES[split][1] else None
        how = manual_install_instructions(data_dir, url_base, overrides)
        return SVHNUnavailable(f"{note}{what}\n\n{how}")

    if not path.is_file():
        if not download:
            raise fail(f"SVHN {split!r} is not in {folder} and download=False.")
        _download(split, path, url_base + path.name, expected, seconds, progress, fail)
    try:
        return _read(folder, split)
    except ValueError as exc:
        moved = _quarantine(path)
        raise fail(
            f"The SVHN {split!r} file {path} is damaged: {exc}. It was renamed to {moved.name}."
        ) from exc
