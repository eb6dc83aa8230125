"""dreamsuite.cpus: the cgroup CPU quota (v2 and v1, read from fake cgroup trees), the CPUs a
process may use, where a thread count comes from, and torch's threads set from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dreamsuite.cpus import (
    apply_threads,
    available_cpus,
    cgroup_cpu_limit,
    resolve_threads,
    thread_env,
    threads_from_env,
    worker_threads,
)


def _tree(tmp_path: Path, files: dict[str, str], membership: str = "0::/\n") -> tuple[Path, Path]:
    """A fake ``/sys/fs/cgroup`` holding ``files`` and a fake ``/proc/self/cgroup``."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return root, proc


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "400000 100000\n"}, 4.0),
    ({"cpu.max": "50000 100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     2.5),
    ({}, None),
    ({"cpu.max": "lots 100000\n"}, None),
    ({"cpu.max": "100000 0\n"}, None),
])
def test_the_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path, files, limit):
    root, proc = _tree(tmp_path, files)
    assert cgroup_cpu_limit(root, proc) == limit


def test_the_tightest_quota_of_the_cgroup_and_its_ancestors_applies(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000", "kubepods/cpu.max": "200000 100000",
                                  "kubepods/pod1/cpu.max": "300000 100000",
                                  "other/cpu.max": "10000 100000"},
                       membership="0::/kubepods/pod1\n")
    assert cgroup_cpu_limit(root, proc) == 2.0
    # v1: the cpu controller's line names the cgroup.
    root, proc = _tree(tmp_path / "v1", {
        "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
        "cpu/job/cpu.cfs_quota_us": "150000", "cpu/job/cpu.cfs_period_us": "100000"},
        membership="4:memory:/elsewhere\n3:cpu:/job\n2:cpuacct:/job\n")
    assert cgroup_cpu_limit(root, proc) == 1.5


def test_a_host_path_not_mounted_in_the_container_reads_the_mount_itself(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "200000 100000"},
                       membership="0::/system.slice/docker-abc.scope\n")
    assert cgroup_cpu_limit(root, proc) == 2.0


@pytest.mark.parametrize("files, affinity, cpus", [
    ({"cpu.max": "max 100000"}, 8, 8),       # no quota: the affinity mask
    ({"cpu.max": "150000 100000"}, 4, 1),    # 1.5 CPUs: rounded down
    ({"cpu.max": "50000 100000"}, 4, 1),     # half a CPU: at least 1
    ({"cpu.max": "1600000 100000"}, 2, 2),   # a quota above the mask: the mask
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 16, 3),
])
def test_available_cpus_is_the_affinity_bounded_by_the_quota(tmp_path, files, affinity, cpus):
    root, proc = _tree(tmp_path, files)
    assert available_cpus(root=root, proc_cgroup=proc, affinity=affinity) == cpus


def test_available_cpus_here_is_at_most_the_affinity_mask():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_threads_come_from_the_config_then_the_environment_then_the_cpus():
    env = {"OMP_NUM_THREADS": "3"}
    assert resolve_threads(2, env, cpus=8) == (2, "config")
    assert resolve_threads(None, env, cpus=8) == (3, "OMP_NUM_THREADS")
    assert resolve_threads(None, {}, cpus=8) == (8, "available CPUs")
    for unset in ("", "0", "-2", "many"):  # not a count: as if unset
        assert resolve_threads(None, {"OMP_NUM_THREADS": unset}, cpus=5) == (5, "available CPUs")
    assert threads_from_env({"OMP_NUM_THREADS": "4,2"}) == 4  # nested levels: the outer one
    assert thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}


def test_apply_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        # Inter-op threads are fixed once inter-op work started: left as they are, no error.
        assert apply_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        apply_threads(0)


def test_each_worker_gets_its_share_unless_the_environment_says():
    assert worker_threads(1, {}, cpus=4) == 4
    assert worker_threads(2, {}, cpus=4) == 2
    assert worker_threads(3, {}, cpus=4) == 1
    assert worker_threads(8, {}, cpus=4) == 1  # at least one
    assert worker_threads(0, {}, cpus=4) == 4  # no workers named: one
    assert worker_threads(2, {"OMP_NUM_THREADS": "3"}, cpus=4) == 3  # each worker's own


_CHURN = (
    "import ctypes, resource\n"
    "{setup}\n"
    "libc = ctypes.CDLL(None)\n"
    "libc.malloc.restype = ctypes.c_void_p\n"
    "libc.malloc.argtypes = (ctypes.c_size_t,)\n"
    "libc.free.argtypes = (ctypes.c_void_p,)\n"
    "size = 24 * 2**20\n"
    "def churn():\n"
    "    # a pass's worth of activations: three 24 MiB blocks written, then all freed\n"
    "    blocks = [libc.malloc(size) for _ in range(3)]\n"
    "    for block in blocks:\n"
    "        ctypes.memset(block, 1, size)\n"
    "    for block in reversed(blocks):\n"
    "        libc.free(block)\n"
    "for _ in range(3):  # glibc's thresholds adapt, the heap grows to its size\n"
    "    churn()\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "for _ in range(10):\n"
    "    churn()\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
)


def _faults(setup: str, env: dict[str, str] | None = None) -> int:
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", _CHURN.format(setup=setup)], check=True,
                         capture_output=True, text=True, env={**environ, **(env or {})})
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux (glibc) only")
def test_kept_freed_memory_is_reused_without_page_faults():
    """With glibc's defaults the heap's top is trimmed after each round of big blocks, which
    are then faulted in afresh (3 x 6,144 pages a round); once :func:`keep_freed_memory`
    ran, or a dream started (it calls it), the freed memory is reused."""
    default = _faults("")
    kept = _faults("from dreamsuite.cpus import keep_freed_memory; assert keep_freed_memory()")
    dreamed = _faults(
        "from dreamsuite.engine import DreamConfig, dream\n"
        "import torch\n"
        "dream(torch.rand(3, 64, 64), DreamConfig(octaves=1, steps=1))")
    assert default > 10 * 24 * 2**20 / 4096  # a block's worth of pages a round at least
    assert kept < default / 100 and dreamed < default / 100
    # An operator's own allocator settings win: nothing is changed then.
    untouched = _faults("from dreamsuite.cpus import keep_freed_memory\n"
                        "assert not keep_freed_memory()",
                        env={"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"})
    assert untouched > default / 2
