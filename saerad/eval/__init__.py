"""Offline evaluation: clinical-label F1 (CheXpert-rule and CheXbert), text metrics with bootstrap
CIs, baselines, and the runner behind ``saerad score`` / ``saerad evaluate``.

Independent of the SAE: it scores any generated reports against references. Conventions are those
of docs/method.md#evaluation; :mod:`saerad.eval.scoring` writes ``metrics.json``,
:mod:`saerad.eval.tables` a Markdown table and per-study predictions. Sub-modules import lazily
(torch and Java only where needed).
"""
