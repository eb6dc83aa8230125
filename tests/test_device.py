"""dreamsuite.device: which device work runs on, and which errors mean it ran out of memory."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.device import DEVICE_ENV, out_of_memory, select_device
from dreamsuite.errors import InvalidArgument


def test_a_gpu_is_always_named_with_its_index(monkeypatch):
    """``cuda`` and ``cuda:0`` are one device: caches keyed by its name (the backbones) must
    not hold two copies. CUDA is simulated; no tensor is made."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert select_device("cuda") == torch.device("cuda", 1)
    assert select_device() == torch.device("cuda", 1)
    assert select_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    assert str(select_device()) == "cuda:1"


def test_cpu_and_bad_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert select_device() == torch.device("cpu")
    with pytest.raises(InvalidArgument, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(InvalidArgument, match="unknown device 'gpu-ish'"):
        select_device("gpu-ish")


def test_out_of_memory_errors_of_each_allocator_and_others():
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                      "can't allocate memory: you tried to allocate 1 bytes"))
    assert out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))  # not an allocator's error
    # What the CPU allocator really raises for an impossible allocation:
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert out_of_memory(info.value), str(info.value)
