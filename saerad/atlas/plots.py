"""Plots as inline SVG strings: no plotting library, nothing to load, crisp at any zoom.

Bars are drawn on whole pixels with ``shape-rendering="crispEdges"`` so a screenshot shows exactly the
counts (the browser tests measure bar heights in pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

BAR = "#2f6fb0"
MARKER = "#c0392b"
INK = "#444"


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def bar_heights(counts: Sequence[int], height: int) -> list[int]:
    """Pixel height of each bar: linear in the count, tallest = ``height``, any non-zero >= 1 px."""
    peak = max(counts, default=0)
    if peak <= 0:
        return [0] * len(counts)
    return [0 if c <= 0 else max(1, round(height * c / peak)) for c in counts]


def sparkline_svg(counts: Sequence[int], *, bar: int = 3, gap: int = 1, height: int = 24, label: str = "") -> str:
    """A bar sparkline of a histogram, ``len(counts) * (bar + gap)`` pixels wide."""
    width = len(counts) * (bar + gap)
    rects = "".join(
        f'<rect x="{i * (bar + gap)}" y="{height - h}" width="{bar}" height="{h}"/>'
        for i, h in enumerate(bar_heights(counts, height))
        if h
    )
    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" shape-rendering="crispEdges">'
        f'<rect class="spark-base" x="0" y="{height - 1}" width="{width}" height="1" fill="#ddd"/>'
        f'<g fill="{BAR}">{rects}</g></svg>'
    )


def histogram_svg(
    counts: Sequence[int],
    vmax: float,
    *,
    markers: Mapping[str, float] | None = None,
    width: int = 560,
    height: int = 220,
    label: str = "",
) -> str:
    """Histogram of active values with axes; ``markers`` (name -> activation) become dashed lines
    (e.g. the dictionary's training quantiles, so shifts between datasets show)."""
    left, right, top, bottom = 48, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(counts), 1)
    peak = max(counts, default=0)
    parts = [
        f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" font-size="11" '
        f'font-family="system-ui, sans-serif" fill="{INK}">'
    ]
    step = plot_w / n
    heights = bar_heights(counts, plot_h)
    parts.append(f'<g fill="{BAR}" shape-rendering="crispEdges">')
    for i, h in enumerate(heights):
        if h:
            x = left + round(i * step)
            parts.append(f'<rect x="{x}" y="{top + plot_h - h}" width="{max(1, round((i + 1) * step) - round(i * step) - 1)}" height="{h}"/>')
    parts.append("</g>")
    axis_y = top + plot_h
    parts.append(f'<path d="M{left} {top} V{axis_y} H{left + plot_w}" stroke="{INK}" fill="none" shape-rendering="crispEdges"/>')
    for k in range(5):
        x = left + plot_w * k / 4
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{_fmt(vmax * k / 4)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">activation (active images only)</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 6}" y="{axis_y}" text-anchor="end">0</text>')
    parts.append(
        f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">images</text>'
    )
    if vmax > 0:
        for i, (name, value) in enumerate((markers or {}).items()):
            if not 0 < value <= vmax:
                continue
            x = left + plot_w * value / vmax
            # Labels of markers in the right half sit left of their line, so none runs off the plot.
            right_half = value > vmax / 2
            tx, anchor = (x - 3, "end") if right_half else (x + 3, "start")
            parts.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="{MARKER}" stroke-dasharray="4 3"/>'
                f'<text x="{tx:.1f}" y="{top + 10 + 12 * i}" text-anchor="{anchor}" fill="{MARKER}">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
