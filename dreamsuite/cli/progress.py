"""Progress output of long commands: a tqdm bar on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["ProgressBar"]


class ProgressBar:
    """A tqdm bar over all steps of all octaves, showing octave and loss (stderr)."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = tqdm(total=total, unit="step", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True)

    def update(self, octave: int, octaves: int, loss: float, size: tuple[int, int],
               total: int | None = None) -> None:
        """Advance one unit; ``total`` corrects the length once the real plan is known (the
        planner may drop octaves that would be below the backbone's minimum size)."""
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.set_description(f"octave {octave + 1}/{octaves} {size[1]}x{size[0]}")
        self.bar.set_postfix(loss=f"{loss:.4g}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
