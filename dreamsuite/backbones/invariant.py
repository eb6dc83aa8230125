"""Batched convolutions whose every sample comes out bit for bit as it does alone.

The samples of a dream batch are independent, yet a batched kernel may still round them
differently from the same kernel on one image: oneDNN chooses its blocking, and so the order of
each sum, from the whole shape, batch size included, and from the thread count. With 2 threads
the backward of EfficientNet-Lite0's 1x1 expand convolutions (480 or 672 channels) at 4-16 px,
and many of Inception's and GoogLeNet's small convolutions, change with the batch size (with 1
thread none of those does): the input gradient moves by about 1e-7 of itself. A dream
magnifies that (its steps are normalised and its ReLUs switch on and off): a default dream
stepped in a batch ended 34-58% of its change away from the same dream alone.

:func:`call` runs one convolution op (forward, oneDNN's fused forward, or the backward to the
input) on a batch. Each op signature (shapes, strides, arguments, thread count and oneDNN
switches) is checked once per process (until 4096 newer ones evict it): the op runs on
random-looking data as one call and sample by sample, and the two are compared bit for bit.
Where they agree the batch stays one call; where they differ that signature runs sample by
sample from then on. Those are small, cheap convolutions, so a batch keeps most of its speed-up
and each of its samples gets exactly the result it gets alone. Other ops (activations,
residual additions, pooling, crops) work sample by sample whatever the batch; the tests check
whole backbones' batched passes against single ones bit for bit.

The registered backbones' convolutions in a forward+backward on the CPU go through it (their
fast stages, :mod:`dreamsuite.backbones.fused`, call it; ``conv_act``'s plain fallbacks, for
convolutions it cannot take, do not), and it checks within :func:`exact_batches`: the dream
engine's batched passes (and their calibration) use it. CUDA's convolutions do not go through
it (its batched kernels have not been measured yet).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["call", "exact_batches", "split_signatures"]

_aten = torch.ops.aten

#: op -> (positions of its batched tensor arguments, whether it returns a tuple)
_OPS: dict[Any, tuple[tuple[int, ...], bool]] = {
    _aten.convolution.default: ((0,), False),
    _aten.convolution_backward.default: ((0, 1), True),
}
with contextlib.suppress(AttributeError, RuntimeError):  # a torch built without oneDNN
    _OPS[torch.ops.mkldnn._convolution_pointwise.default] = ((0,), False)

log = logging.getLogger(__name__)

_MAX_SIGNATURES = 4096
_split: OrderedDict[tuple, bool] = OrderedDict()  # op signature -> runs sample by sample
_lock = threading.Lock()


def split_signatures() -> list[tuple]:
    """The op signatures found to round differently in a batch (run sample by sample)."""
    with _lock:
        return [key for key, split in _split.items() if split]


_state = threading.local()


@contextlib.contextmanager
def exact_batches() -> Iterator[None]:
    """Within it (in this thread, backward passes included), :func:`call` gives each sample
    of a batch exactly its result alone. Outside, batches run as one call: training and
    evaluation, which need no replay, keep every kernel's full speed."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def call(func, *args):
    """``func(*args)`` for a convolution op of :data:`_OPS`; within :func:`exact_batches`,
    each sample of a batch exactly as the op gives it alone. Anything that is not a batched
    call (one image, a backward that also wants the weights' gradient, which sums over the
    batch) is just ``func(*args)``."""
    if not getattr(_state, "on", False):
        return func(*args)
    batch = _batch_of(func, args)
    if batch < 2:
        return func(*args)
    key = _signature(func, args)
    split = _split.get(key)
    if split is None:
        try:
            split = _varies(func, args, batch)
        except Exception as exc:  # e.g. no memory for the check: sample by sample is exact
            log.warning("checking %s on a batch of %d failed (%s); running it sample by "
                        "sample", getattr(func, "__name__", func), batch, exc)
            split = True
        with _lock:
            _split[key] = split
            while len(_split) > _MAX_SIGNATURES:
                _split.popitem(last=False)
    return _sample_by_sample(func, args, batch) if split else func(*args)


def _batch_of(func, args: tuple) -> int:
    indexes, _ = _OPS[func]
    first = args[indexes[0]]
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        return 0
    if func is _aten.convolution_backward.default and list(args[-1])[1:] != [False, False]:
        return 0
    return first.shape[0]


def _signature(func, args: tuple) -> tuple:
    """The op, its arguments' shapes, strides, dtypes and devices, and what else makes oneDNN
    choose other kernels: the thread count (at 1 thread none of the 1x1 backwards that vary at
    2 do) and the backend's switches."""
    def one(a):
        if isinstance(a, torch.Tensor):
            return (tuple(a.shape), a.stride(), a.dtype, a.device)
        if isinstance(a, list):
            return tuple(a)
        return a
    settings = (torch.get_num_threads(), torch.backends.mkldnn.enabled,
                torch.backends.mkldnn.deterministic, torch.are_deterministic_algorithms_enabled(),
                getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", None))
    return (func, settings, *(one(a) for a in args))


def _sample_by_sample(func, args: tuple, batch: int):
    indexes, multi = _OPS[func]
    outs = []
    for i in range(batch):
        own = list(args)
        for k in indexes:
            own[k] = args[k][i:i + 1]
        outs.append(func(*own))
    if not multi:
        return _join(outs)
    return tuple(None if outs[0][j] is None else _join([o[j] for o in outs])
                 for j in range(len(outs[0])))


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """The samples' results as one batch, in their memory layout (channels_last stays
    channels_last, also where a 1x1 map is contiguous both ways)."""
    return torch.cat(parts)


#: The period of the probes' data: a prime, so no channel count or row length lines up with it.
_NOISE_PERIOD = 65521
_noise: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _noise_block(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    if key not in _noise:
        generator = torch.Generator().manual_seed(0)  # not the caller's random stream
        _noise[key] = torch.randn(_NOISE_PERIOD, generator=generator).to(device, dtype)
    return _noise[key]


def _random(a: torch.Tensor) -> torch.Tensor:
    """Random-looking data of ``a``'s shape, strides, dtype and device (dense, with gaps or
    expanded alike): a fixed block of normal noise repeated through its memory (a copy, not a
    draw: probing a batch of large images costs about a copy of them, and the caller's random
    stream is left alone)."""
    extent = 1 + sum((n - 1) * abs(step) for n, step in zip(a.shape, a.stride(), strict=True)) \
        if a.numel() else 0
    memory = torch.empty(extent, dtype=a.dtype, device=a.device)
    _repeat_into(memory, _noise_block(a.dtype, a.device))
    return memory.as_strided(a.shape, a.stride())


def _repeat_into(flat: torch.Tensor, block: torch.Tensor) -> None:
    period = len(block)
    whole, rest = divmod(flat.numel(), period)
    if whole:
        flat[:whole * period].view(whole, period).copy_(block.expand(whole, period))
    if rest:
        flat[whole * period:].copy_(block[:rest])


def _varies(func, args: tuple, batch: int) -> bool:
    """Whether ``func`` on a batch of random data of ``args``' shapes gives any sample a
    result that differs, in any bit, from the same call on that sample alone."""
    indexes, multi = _OPS[func]
    probe = list(args)
    probe[indexes[0]] = _random(args[indexes[0]])  # a backward reads only its grad_output
    whole = func(*probe)
    alone = _sample_by_sample(func, tuple(probe), batch)
    pairs = zip(whole, alone, strict=True) if multi else [(whole, alone)]
    return any(a is not None and not torch.equal(a, b) for a, b in pairs)
