"""A bounded LRU cache of per-layer statistics, keyed by what determines them."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from dreamsuite.activations.compute import LayerStats

__all__ = ["StatsKey", "StatsCache"]


class StatsKey(NamedTuple):
    """Everything the statistics of one layer depend on."""

    image_sha256: str  # of the encoded bytes as received
    backbone: str
    layer: str
    max_side: int  # preprocessing: 0 = as is, else downscaled to this longest side
    backend_version: str  # code and weights that computed them


class StatsCache:
    """Least-recently-used cache of :class:`LayerStats` (a few KiB each); not thread-safe
    (the service uses it from its event loop only)."""

    def __init__(self, max_entries: int = 4096):
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[StatsKey, LayerStats] = OrderedDict()

    def get(self, key: StatsKey) -> LayerStats | None:
        stats = self._entries.get(key)
        if stats is not None:
            self._entries.move_to_end(key)
        return stats

    def put(self, key: StatsKey, stats: LayerStats) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = stats
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
