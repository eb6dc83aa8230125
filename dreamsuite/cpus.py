"""How many CPUs this process may use, and torch's thread counts set from that.

torch starts as many intra-op threads as the machine has cores, not as many as the process may
use: in a pod that is every core of the node, not the pod's CPU limit, and two processes on a
small machine each take all of it. Threads that outnumber the CPUs stall on each other (on
2 cores, two trainers with 2 threads each took 6-8 s a step, with 1 thread each about 1 s).
Whoever starts the work (a trainer process, a server) calls :func:`apply_threads` once, early;
nothing happens at import.

:func:`available_cpus` is the CPUs this process may run on (its affinity mask) bounded by the
cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the
tightest of its cgroup and their ancestors), rounded down, at least 1.

:func:`keep_freed_memory` (called by :func:`apply_threads` and by every dream) keeps the C
library's allocator from handing freed tensors back to the kernel between passes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

__all__ = ["CGROUP_ROOT", "MAX_THREADS", "THREAD_ENV", "apply_threads", "available_cpus", "cgroup_cpu_limit",
           "apply_worker_threads", "keep_freed_memory", "resolve_threads", "thread_env",
           "threads_from_env", "worker_threads"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: The variable a thread count is read from; :func:`thread_env` sets the other pools' too.
THREAD_ENV = "OMP_NUM_THREADS"
_POOL_ENVS = (THREAD_ENV, "MKL_NUM_THREADS")
#: The most threads any setting may ask for (flags, trainer configs, a pod's CPU limit).
MAX_THREADS = 4096
#: cgroup v1 mounts of the cpu controller.
_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _memberships(proc_cgroup: Path) -> dict[str, str]:
    """Controller (``""`` for cgroup v2) -> this process's cgroup path, from
    ``/proc/self/cgroup`` (``ID:CONTROLLERS:PATH`` lines)."""
    out: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _chain(mount: Path, cgroup: str) -> Iterator[Path]:
    """The folder of ``cgroup`` under ``mount`` and its ancestors up to ``mount``. In a
    container without a cgroup namespace the path names the host's hierarchy, which is not
    mounted there: then ``mount`` alone (the container's own cgroup)."""
    parts = [p for p in PurePosixPath(cgroup).parts if p not in ("/", ".", "..")]
    if parts and not mount.joinpath(*parts).is_dir():
        parts = []
    while parts:
        yield mount.joinpath(*parts)
        parts.pop()
    yield mount


def _v2_limit(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")  # "QUOTA PERIOD" or "max PERIOD"
    if not text:
        return None
    quota, _, period = text.partition(" ")
    try:
        return None if quota == "max" else int(quota) / int(period or 100_000)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_limit(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        return None if quota is None or period is None or int(quota) <= 0 else (
            int(quota) / int(period))  # -1: no quota
    except (ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the cgroup CPU quota lets this process use (quota / period, e.g. 1.5), the
    tightest over its cgroup and their ancestors, v2 or v1; None when no quota applies or none
    can be read. ``root`` and ``proc_cgroup`` point elsewhere in tests."""
    root = Path(root)
    member = _memberships(Path(proc_cgroup))
    limits = [_v2_limit(folder) for folder in _chain(root, member.get("", "/"))]
    for name in _V1_MOUNTS:
        if (root / name).is_dir():
            limits += [_v1_limit(folder) for folder in _chain(root / name, member.get("cpu", "/"))]
    found = [limit for limit in limits if limit is not None and limit > 0]
    return min(found) if found else None


def available_cpus(*, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                   affinity: int | None = None) -> int:
    """CPUs this process may use: its affinity mask (``affinity`` overrides it) bounded by the
    cgroup quota (:func:`cgroup_cpu_limit`), rounded down, at least 1."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            affinity = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    cpus = affinity if limit is None else min(affinity, math.floor(limit))
    return max(1, cpus)


def threads_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``$OMP_NUM_THREADS`` when set to a positive count (of a list such as ``4,2``, the first:
    the outer level); None when unset or not a count."""
    text = (os.environ if environ is None else environ).get(THREAD_ENV, "")
    try:
        threads = int(text.split(",")[0])
    except ValueError:
        return None
    return threads if threads >= 1 else None


def resolve_threads(configured: int | None = None, environ: Mapping[str, str] | None = None,
                    *, cpus: int | None = None) -> tuple[int, str]:
    """``(threads, where from)``: ``configured`` when given, else ``$OMP_NUM_THREADS``, else
    the available CPUs (``cpus``, or :func:`available_cpus`)."""
    if configured is not None:
        return configured, "config"
    threads = threads_from_env(environ)
    if threads is not None:
        return threads, THREAD_ENV
    return (available_cpus() if cpus is None else cpus), "available CPUs"


def thread_env(threads: int) -> dict[str, str]:
    """Environment that gives a child process ``threads`` threads in each pool it may start
    before it sets its own (OpenMP, MKL)."""
    return {name: str(threads) for name in _POOL_ENVS}


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads to ``threads`` and its inter-op threads too where that is
    still allowed (only before any inter-op work; later it stays as it is). Returns
    ``threads``."""
    import torch  # heavy: the CPU count above serves callers that never load torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    keep_freed_memory()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # set already, or inter-op work has started
        torch.set_num_interop_threads(threads)
    return threads


#: glibc's ``mallopt`` parameters, and the values :func:`keep_freed_memory` sets: blocks up to
#: 32 MiB (the most glibc allows) come from the heap instead of their own ``mmap``, and up to
#: 512 MiB of free memory may stay at the top of the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 512 * 2**20
#: Environment variables through which an operator sets glibc's allocator: then it is theirs.
_MALLOC_ENVS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process reuse the memory of freed tensors instead of returning it to the
    kernel and faulting it in again, zeroed, at the next allocation; returns whether that was
    set (once per process; later calls return the first answer).

    glibc's defaults serve each block over 128 KiB-32 MiB with its own ``mmap`` and trim the
    heap's top when more than about twice that is free: a dream step frees and allocates
    tens of megabytes of activations and gradients, and at 512 px the engine took about
    120,000 page faults a dream (some 5% of its time). With a 32 MiB mmap threshold and
    512 MiB trim threshold it takes none; the process's resident memory then stays near its
    peak instead of falling between passes, as with PyTorch's CUDA caching allocator. Nothing
    changes where the C library is not glibc (``mallopt`` missing or refusing), or where the
    environment already sets its allocator (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``)."""
    if any(name in os.environ for name in _MALLOC_ENVS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)


def worker_threads(workers: int, environ: Mapping[str, str] | None = None, *,
                   cpus: int | None = None) -> int:
    """Threads of each of ``workers`` processes that share this process's CPUs (TorchServe's
    workers of one model): ``$OMP_NUM_THREADS`` when set (each worker's own), else the
    available CPUs (``cpus``, or :func:`available_cpus`) divided among them, at least 1."""
    threads = threads_from_env(environ)
    if threads is not None:
        return threads
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, workers))


def apply_worker_threads(model_config: Mapping | None) -> int:
    """Set the threads of a TorchServe worker on the CPU to its share (:func:`worker_threads`)
    of its model's ``maxWorkers`` (from the model's ``model-config.yaml``, ``None``: one);
    returns the count."""
    return apply_threads(worker_threads(int((model_config or {}).get("maxWorkers") or 1)))
