"""Small line charts as PNGs (training curves), drawn with Pillow: no plotting library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["line_chart"]

_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], path: Path, *,
               title: str = "", width: int = 900, panel_height: int = 180) -> Path:
    """One panel per series (its own y range), steps on x; returns ``path``.

    Points whose y is None (a NaN written as JSON null, or a figure not known yet) or not finite
    are left out of their panel."""
    names = [n for n, points in series.items() if points]
    height = 40 + panel_height * max(1, len(names))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=_font(18))
    xs = [x for n in names for x, _ in series[n]]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    left, right = 90, width - 20
    for i, name in enumerate(names):
        top = 40 + i * panel_height
        bottom = top + panel_height - 30
        points = [(x, y) for x, y in series[name] if y is not None and math.isfinite(y)]
        ys = [y for _, y in points] or [0.0]
        y_lo, y_hi = min(ys), max(ys)
        if y_hi == y_lo:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
        draw.text((10, top), name, fill=_COLOURS[i % len(_COLOURS)], font=_font(14))
        draw.text((10, top + 20), f"{y_hi:.3g}", fill="black", font=_font(12))
        draw.text((10, bottom - 14), f"{y_lo:.3g}", fill="black", font=_font(12))

        def at(x: float, y: float, top=top, bottom=bottom, y_lo=y_lo, y_hi=y_hi) -> tuple:
            fx = (x - x_lo) / (x_hi - x_lo) if x_hi > x_lo else 0.5
            return (left + fx * (right - left), bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

        if len(points) > 1:
            draw.line([at(x, y) for x, y in points], fill=_COLOURS[i % len(_COLOURS)], width=2)
        for x, y in points[-1:] if len(points) > 1 else points:
            cx, cy = at(x, y)
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=_COLOURS[i % len(_COLOURS)])
        draw.text((left, bottom + 4), f"step {x_lo:.0f}", fill="black", font=_font(12))
        draw.text((right - 80, bottom + 4), f"step {x_hi:.0f}", fill="black", font=_font(12))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
