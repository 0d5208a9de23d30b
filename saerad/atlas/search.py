"""The language-search index of the atlas, written as a JavaScript file.

Search as in SAIL (a query in words -> the features that mean it -> the images that activate them),
with words instead of a text encoder: the page matches the query against each feature's description,
the condition it tracks, the conditions its top training reports share and the conditions the rule
labeller reads in its description, and against the labeller's plain mention words of every condition
("pacemaker" -> Support Devices), then ranks images by the matching features' activations.

``file://`` pages cannot fetch JSON in Chromium, so the index is a script that assigns one global
(``window.SAERAD_ATLAS``), loaded by a ``<script>`` tag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from saerad.atlas.pages import FeatureEntry, page_name

GLOBAL = "SAERAD_ATLAS"
FILE = "search-index.js"
IMAGES_PER_FEATURE = 8


def described_conditions(description: str | None) -> list[str]:
    """Conditions the rule labeller reads as present or uncertain in a description."""
    if not description:
        return []
    from saerad.radtext import label_report

    return [c for c, v in label_report(description).items() if v in (1, -1)]


def search_index(entries: Sequence[FeatureEntry]) -> dict[str, Any]:
    """The index as plain data (what the page searches)."""
    from saerad.radtext.labeler import plain_mentions

    features = []
    for e in entries:
        conditions = sorted({*(e.shared_labels), *described_conditions(e.description)} - {e.tracked or ""})
        features.append({
            "id": e.id,
            "page": f"features/{page_name(e.id)}",
            "description": e.description or "",
            "tracked": e.tracked or "",
            "conditions": conditions,
            "usable": e.usable,
            "score": e.score,
            "max": e.profile.max,
            "images": [[t.image_id, t.src, t.activation] for t in e.top[:IMAGES_PER_FEATURE] if t.src],
        })
    return {"version": 1, "features": features, "mentions": plain_mentions()}


def search_index_js(entries: Sequence[FeatureEntry]) -> str:
    """``window.SAERAD_ATLAS = {...};`` with ``</`` and line separators escaped, so no description
    can end the script or break the line."""
    payload = json.dumps(search_index(entries), ensure_ascii=True, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")
    return f"window.{GLOBAL} = {payload};\n"
