"""The feature atlas: a static, browsable site of a bundle's features on the user's own images.

``saerad atlas --bundle B --dataset D --root DIR --out SITE/`` (or :func:`build_atlas`) writes an
index of every feature (frequency, description, held-out AUROC, usable, tracked condition, activation
sparkline; sortable, filterable, searchable by language) and one page per feature (histogram,
strongest images vs a random sample, optional add/remove counterfactual strips). The site needs no
server; ``saerad serve`` can also serve it at ``/atlas/`` (setting ``SAERAD_ATLAS_DIR``).
"""

from saerad.atlas.site import AtlasOptions, AtlasResult, build_atlas, parse_feature_spec

__all__ = ["AtlasOptions", "AtlasResult", "build_atlas", "parse_feature_spec"]
