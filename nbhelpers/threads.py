"""CPU threads: how many intra-op threads a training run uses, the load that decides it, and a
bounded CPU-burning neighbour to measure what a busy core does to a run.

Why this matters. On a CPU, torch runs every operation of a training step with a team of
OpenMP threads (``torch.get_num_threads()``, by default one per core), and the team waits at the
end of each operation until its last member is done. When another program holds one of the
cores, one member of the team is descheduled for a scheduler time slice (milliseconds) while
the operation itself takes microseconds, and the others wait (spinning first: OpenMP's
``OMP_WAIT_POLICY``, read once when torch is imported). A training step of a small network is a
few hundred such operations, so a busy core can make it 10-50x slower, where giving up that core
would cost 2x. One thread has no team to wait for.

What :func:`choose_threads` does, per run (:func:`nbhelpers.train.train` calls it through
:class:`ThreadPolicy` when ``threads="auto"``):

- never more than the learner's setting (``torch.get_num_threads()`` when the run starts) or the
  CPU quota of the container;
- never more than the cores other programs leave idle, read from ``/proc/stat`` (Linux; the
  CPUs this process may use, minus its own CPU time; over 50 ms before the run and again over
  every epoch). Where it cannot be read, the load is not taken into account;
- never more than one thread per :data:`MIN_FLOP_PER_THREAD` of work in a training step
  (:func:`step_flops`), since a step that small gains nothing from a team.

``torch.get_num_interop_threads()`` (the pool for running independent operations side by side)
is left alone: eager training steps do not use it. :class:`ThreadPolicy` sets the count for a
run and puts the learner's setting back afterwards.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from nbhelpers import validate

__all__ = [
    "MIN_FLOP_PER_THREAD", "LoadMeter", "ThreadPolicy", "busy_neighbour", "check_threads",
    "choose_threads", "describe_threads", "cpu_limit", "idle_cores", "step_flops",
]  # fmt: skip

#: Floating-point operations of one training step below which one more thread does not pay.
#: Measured here: a step of the notebook CNN is a few hundred operations (forward, backward
#: and Adam: 380-470 counted), and at width 4, batch 16 (0.07 GFLOP per step) each takes about
#: 40 microseconds on one thread, the order of what waking and joining a thread team costs. A
#: rule of thumb, to be checked on a quiet machine with ``benchmarks/bench_busy.py``.
MIN_FLOP_PER_THREAD = 1e8
_STAT = Path("/proc/stat")
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_limit() -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = _CPU_MAX.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _cpu_ticks(text: str, cpus: set[int] | None) -> tuple[int, int]:
    """(busy, total) clock ticks of the ``cpuN`` lines of ``/proc/stat`` text for ``cpus``."""
    busy = total = 0
    for line in text.splitlines():
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
        busy += user + nice + system + irq + softirq + steal  # steal: taken by the hypervisor
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return busy, total


class LoadMeter:
    """CPU cores other programs kept busy since :meth:`start` (Linux ``/proc/stat``).

    ``busy`` ticks of the CPUs this process may use minus this process's own CPU time
    (``time.process_time``, all its threads) over the window; DataLoader worker processes count
    as other programs. Where ``/proc/stat`` is missing, :meth:`others` returns None.
    """

    def __init__(self, read: Callable[[], str] | None = None):
        self._read = read or (lambda: _STAT.read_text())
        try:
            self._cpus: set[int] | None = set(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = None
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start()

    def _sample(self) -> tuple[int, int, float] | None:
        try:
            busy, total = _cpu_ticks(self._read(), self._cpus)
        except (OSError, ValueError):
            return None
        return busy, total, time.process_time()

    def start(self) -> None:
        """Begin a new window."""
        self._begin = self._sample()

    def others(self) -> float | None:
        """Cores other programs kept busy since :meth:`start` (>= 0), or None if unreadable."""
        end = self._sample()
        if self._begin is None or end is None:
            return None
        busy, total, own = (b - a for a, b in zip(self._begin, end, strict=True))
        n = len(self._cpus) if self._cpus else (os.cpu_count() or 1)
        wall_s = total / self._hz / n
        if wall_s <= 0:
            return None
        return max(0.0, (busy / self._hz - own) / wall_s)


def idle_cores(window_s: float = 0.05) -> float | None:
    """Cores of :func:`cpu_limit` that other programs left idle over the next ``window_s``
    seconds (float), or None where the load cannot be read. Sleeps ``window_s``."""
    meter = LoadMeter()
    time.sleep(validate.number("window_s", window_s, 0, 10, low_open=True))
    others = meter.others()
    return None if others is None else max(0.0, cpu_limit() - others)


def step_flops(model: nn.Module, batch_size: int, image_shape=(3, 32, 32)) -> float | None:
    """Estimated floating-point operations of one training step (forward + backward).

    One forward pass of a single float32 image of ``image_shape`` (eval mode, no gradients; the
    mode is put back) counts the multiply-adds of every ``nn.Conv2d`` and ``nn.Linear`` (2
    operations each; they hold nearly all the work, element-wise layers are left out). A step
    is three forward passes' worth per image (the backward pass computes gradients for the
    inputs and for the weights, each about one forward pass: Kaplan et al. 2020, "Scaling Laws
    for Neural Language Models", section 2.1) times ``batch_size``. None when the model cannot
    be run on such an input. Counted once per architecture (parameter names and shapes) and
    image shape in a process.
    """
    key = (
        type(model).__name__,
        tuple(image_shape),
        *((n, tuple(p.shape)) for n, p in model.named_parameters()),
    )
    if key not in _FORWARD_FLOPS:
        _FORWARD_FLOPS[key] = _forward_flops(model, image_shape)
    forward = _FORWARD_FLOPS[key]
    return None if forward is None else 3.0 * forward * batch_size


_FORWARD_FLOPS: dict[tuple, float | None] = {}


def _forward_flops(model: nn.Module, image_shape) -> float | None:
    """Operations of the convolutions and linear layers in one forward pass of one image."""
    total = 0.0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        total += 2.0 * output.numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    except Exception:  # noqa: BLE001 - an estimate only: no cap when it cannot be made
        return None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def choose_threads(limit: int, idle: float | None = None, flops: float | None = None) -> int:
    """The intra-op thread count of a run: the rule of the module docstring.

    Args:
        limit: the most threads allowed (the learner's setting, capped by :func:`cpu_limit`).
        idle: cores other programs leave idle (None: unknown, not used).
        flops: work of one training step (:func:`step_flops`; None: unknown, not used).

    Returns:
        An int in ``[1, limit]``: ``min(limit, round(idle), flops // MIN_FLOP_PER_THREAD)``, at
        least 1.
    """
    count = validate.positive_int("limit", limit)
    if idle is not None:
        count = min(count, int(idle + 0.5))
    if flops is not None:
        count = min(count, int(flops // MIN_FLOP_PER_THREAD))
    return max(1, count)


class ThreadPolicy:
    """The thread count of one training run: what ``threads`` asks for, applied and undone.

    Args:
        threads: ``"auto"`` (:func:`choose_threads` at :meth:`begin` and again after every
            epoch), an int >= 1 (exactly that many) or None (leave torch's setting alone).
        device: the training device; off the CPU nothing is changed or noted.

    Attributes:
        used: the count of every epoch so far on the CPU (also with None); empty on a GPU.

    Raises:
        ValueError: ``threads`` is none of those.
    """

    def __init__(self, threads: int | str | None, device: torch.device):
        check_threads("threads", threads)
        self.threads, self.device = threads, torch.device(device)
        self.active = self.device.type == "cpu"  # notes the counts
        self.sets = self.active and threads is not None  # and changes them
        self.previous = torch.get_num_threads()
        self.limit = min(self.previous, cpu_limit())
        self.used: list[int] = []
        self.flops: float | None = None
        self.meter: LoadMeter | None = None

    def begin(self, model: nn.Module, batch_size: int | None, image_shape=(3, 32, 32)) -> None:
        """Choose and set the count before the first step (reads the load for 50 ms)."""
        if not self.sets:
            return
        if self.threads != "auto":
            torch.set_num_threads(int(self.threads))
            return
        if self.limit > 1:
            self.flops = step_flops(model, batch_size, image_shape) if batch_size else None
            torch.set_num_threads(choose_threads(self.limit, idle_cores(), self.flops))
        else:
            torch.set_num_threads(1)
        self.meter = LoadMeter()

    def epoch_end(self) -> int | None:
        """Note the ending epoch's count and return it (None when inactive); with "auto",
        choose again from the load during that epoch."""
        if not self.active:
            return None
        self.used.append(torch.get_num_threads())
        if self.meter is not None and self.limit > 1:
            others = self.meter.others()
            idle = None if others is None else max(0.0, cpu_limit() - others)
            torch.set_num_threads(choose_threads(self.limit, idle, self.flops))
            self.meter.start()
        return self.used[-1]

    def close(self) -> None:
        """Put the learner's setting back."""
        if self.sets and torch.get_num_threads() != self.previous:
            torch.set_num_threads(self.previous)


def describe_threads(counts) -> str:
    """``[2, 2]`` -> ``"2 CPU threads"``, ``[1]`` -> ``"1 CPU thread"``, ``[1, 2]`` -> ``"1-2 CPU
    threads"`` (the counts of a run's epochs; non-integers are left out)."""
    values = sorted({int(c) for c in counts if isinstance(c, int) and not isinstance(c, bool)})
    if not values:
        return "CPU threads unknown"
    span = str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
    return f"{span} CPU thread{'s' if values[-1] > 1 else ''}"


def check_threads(name: str, value) -> int | str | None:
    """A thread setting: ``"auto"``, None or an int in [1, 1024]. Raises ValueError otherwise."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, str):
        raise validate.invalid(name, value, "'auto', None or an integer in [1, 1024]")
    return validate.integer(name, value, 1, 1024)


@contextmanager
def busy_neighbour(cores: int = 1, max_seconds: float = 120.0) -> Iterator[list]:
    """Run ``cores`` CPU-burning processes for the block: a stand-in for a browser, a video call
    or a second notebook on the same machine.

    Each is a Python busy loop pinned to one core (the last ones this process may use; pinning
    where the OS allows it) and bounded: it ends itself after ``max_seconds`` even if this
    process dies. They are started (and running) when the block begins, and stopped
    (terminate, then kill) when it ends, also on errors and interrupts.

    Yields:
        The ``subprocess.Popen`` objects.

    Raises:
        ValueError: ``cores`` not in [1, cpu_limit()] or ``max_seconds`` not in (0, 3600].
    """
    cores = validate.integer("cores", cores, 1, cpu_limit())
    max_seconds = validate.number("max_seconds", max_seconds, 0, 3600, low_open=True)
    try:
        cpus = sorted(os.sched_getaffinity(0))[-cores:]
    except AttributeError:
        cpus = [-1] * cores
    code = (
        "import os, sys, time\n"
        "cpu, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])\n"
        "if cpu >= 0 and hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {cpu})\n"
        "print('burning', flush=True)\n"
        "while time.monotonic() < end: pass\n"
    )
    procs: list[subprocess.Popen] = []
    try:
        for cpu in cpus:
            args = [sys.executable, "-c", code, str(cpu), str(max_seconds)]
            procs.append(
                subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            )
        for proc in procs:
            proc.stdout.readline()  # it is running once it says so
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
