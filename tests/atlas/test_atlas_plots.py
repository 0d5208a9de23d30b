"""The SVG plots: bar heights follow the counts; markers and labels stay inside the plot."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from saerad.atlas.plots import bar_heights, histogram_svg, sparkline_svg


def test_bar_heights():
    assert bar_heights([0, 5, 10, 1], 24) == [0, 12, 24, 2]
    assert bar_heights([1, 1000], 20) == [1, 20]  # a non-zero count never vanishes
    assert bar_heights([0, 0], 24) == [0, 0] and bar_heights([], 24) == []


def test_sparkline_geometry():
    svg = sparkline_svg([4, 0, 2, 1], label='a "label" <x>')
    root = ET.fromstring(svg)  # well-formed XML, label escaped
    assert root.get("width") == "16" and root.get("aria-label") == 'a "label" <x>'
    bars = [(int(r.get("x")), int(r.get("height"))) for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if r.get("class") != "spark-base"]
    assert bars == [(0, 24), (8, 12), (12, 6)]


def test_histogram_markers():
    svg = histogram_svg([1, 3, 2, 0], 2.0, markers={"train q50": 0.5, "train q99": 1.9, "outside": 3.0}, label="h")
    ET.fromstring(svg)
    assert "train q50" in svg and "train q99" in svg and "outside" not in svg
    # the right-hand marker's label is anchored at its end so it does not run off the plot
    assert re.search(r'text-anchor="end" fill="#c0392b">train q99', svg)
    assert '<text x="48' in svg or 'text-anchor="middle">0<' in svg
    assert "never" not in histogram_svg([], 0.0)  # an empty histogram still renders
