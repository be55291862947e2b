"""The environment of a notebook: device choice, seeding, Colab detection, version banner,
and the folders where data and the learner's work live.

:func:`nbhelpers.notebook.start` puts these together at the top of every notebook::

    device = pick_device()
    seed_everything(0)
    print_banner(device, data_source="synthetic")
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

from nbhelpers import validate
from nbhelpers.threads import describe_threads


def default_data_dir() -> Path:
    """Return the directory where datasets and caches live.

    The environment variable ``NBHELPERS_DATA_DIR`` wins; otherwise
    ``~/.cache/nbhelpers`` (in Colab: ``/content/data``, which the file browser shows).
    The directory is not created here.
    """
    env = os.environ.get("NBHELPERS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if in_colab():
        return Path("/content/data")
    return Path.home() / ".cache" / "nbhelpers"


def project_dir(start: str | Path | None = None) -> Path:
    """The folder where the learner's work (runs, logbook) goes by default.

    The root of a checkout of this series (the nearest folder at or above ``start``, default
    the working directory, that holds both ``nbhelpers/`` and ``notebooks/``), so that
    JupyterLab (whose working directory is ``notebooks/``), ``make run`` and the tests all
    find the same ``runs/``; elsewhere (Colab, a pip install) the working directory itself.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbhelpers" / "__init__.py").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def work_dir(name: str, env_var: str) -> Path:
    """``$env_var`` when set, else ``project_dir() / name`` (not created here)."""
    value = os.environ.get(env_var, "").strip()
    return Path(value).expanduser() if value else project_dir() / name


def in_colab() -> bool:
    """Return True when running inside Google Colab (the ``google.colab`` module is importable)."""
    return "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG") is not None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(prefer: str | None = None) -> torch.device:
    """Choose the fastest available device: CUDA, then Apple MPS, then the CPU.

    Args:
        prefer: ``None`` or ``"auto"`` picks automatically; ``"cuda"``, ``"mps"`` or ``"cpu"``
            forces that kind (``"cuda:1"`` also works). The environment variable
            ``NBHELPERS_DEVICE`` is used when ``prefer`` is None.

    Returns:
        A ``torch.device``.

    Raises:
        ValueError: unknown device kind.
        RuntimeError: the requested device kind is not available on this machine.
    """
    prefer = prefer if prefer is not None else os.environ.get("NBHELPERS_DEVICE")
    available = {"cuda": torch.cuda.is_available(), "mps": _mps_available(), "cpu": True}
    if prefer in (None, "auto"):
        return torch.device(next(kind for kind, ok in available.items() if ok))
    kind = str(prefer).split(":")[0]
    if kind not in available:
        raise validate.invalid("device", prefer, "'auto', 'cuda', 'cuda:N', 'mps', 'cpu'")
    if not available[kind]:
        missing = "no CUDA GPU is" if kind == "cuda" else "Apple MPS is not"
        raise RuntimeError(
            f"Device {kind!r} was requested but {missing} available; use 'auto' or 'cpu'."
        )
    return torch.device(prefer)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and all GPUs).

    Args:
        seed: an integer in [0, 2**32 - 1] (:data:`nbhelpers.validate.MAX_SEED`, the range
            NumPy's seeding takes).
        deterministic: also ask torch for deterministic algorithms where it has them
            (``torch.use_deterministic_algorithms(True, warn_only=True)`` and cuDNN's
            deterministic mode). Some GPU kernels have no deterministic version; torch then warns
            instead of failing, so runs on a GPU can still differ in the last digits.

    Returns:
        A ``torch.Generator`` (CPU) seeded with ``seed``, for data shuffling and splits.

    Raises:
        ValueError: ``seed`` is not an integer in that range (the message names the range).
    """
    seed = validate.seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Return the versions of Python and the libraries the series is built on (strings)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "backpack": _version("backpack-for-pytorch"),
        "cockpit": _version("cockpit-for-pytorch"),
        "nbhelpers": _version("nbhelpers"),
    }


def device_name(device: torch.device | str | None = None, threads=None) -> str:
    """A short human name of ``device``, e.g. ``"cuda (NVIDIA H200)"`` or ``"cpu (2 threads)"``.

    ``threads``: the CPU thread counts a run used (e.g. ``History.threads``, ``[1, 2]`` gives
    ``"cpu (1-2 threads)"``); default (None or empty) torch's current setting.
    """
    device = pick_device(None if device is None else str(device))
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        text = describe_threads(threads or [torch.get_num_threads()])
        return f"cpu ({text.replace(' CPU', '')})"
    return device.type


def banner(device: torch.device | str | None = None, data_source: str | None = None) -> str:
    """Return the one-line version banner shown at the top of every notebook.

    Example: ``python 3.11.7 | torch 2.14.1 | torchvision 0.29.1 | backpack 1.7.1 |
    cockpit 1.0.2 | device cpu (2 threads) | data synthetic (STAND-IN, not real SVHN)``.
    """
    v = versions()
    parts = [
        f"{name} {v[name]}" for name in ("python", "torch", "torchvision", "backpack", "cockpit")
    ]
    parts.append(f"device {device_name(device)}")
    if data_source is not None:
        note = " (STAND-IN, not real SVHN)" if data_source == "synthetic" else ""
        parts.append(f"data {data_source}{note}")
    if in_colab():
        parts.append("Colab")
    return " | ".join(parts)


def print_banner(device: torch.device | str | None = None, data_source: str | None = None) -> None:
    """Print :func:`banner`."""
    print(banner(device, data_source))
