"""Markdown tables of a ``metrics.json`` (values x100 with bootstrap 95% CIs)."""

from __future__ import annotations

from saerad.eval.text_metrics import TEXT_METRICS
from saerad.radtext.conditions import CONDITIONS

F1_KEYS = ("micro_14", "macro_14", "micro_5", "macro_5")


def _cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    if "unavailable" in entry:
        return f"unavailable: {entry['unavailable']}"
    value = 100.0 * entry["value"]
    ci = entry.get("ci95")
    return f"{value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{value:.1f}"


def format_markdown(metrics: dict) -> str:
    """Tables of a metrics dict (values x100 with bootstrap 95% CIs)."""
    s = metrics["settings"]
    lines = [
        f"# Report evaluation ({s.get('dataset') or 'custom'}, split {s.get('split') or 'n/a'}, section {s['section']})",
        "",
        f"{metrics['n_studies']} studies; dropped: "
        + (", ".join(f"{k} {v}" for k, v in metrics["dropped"].items()) or "none")
        + f". Bootstrap: {s['bootstrap']['resamples']} resamples (seed {s['bootstrap']['seed']}), percentile 95% CI. "
        + "Values x100.",
        "",
        f"Text normalisation: {s['normalisation']}. METEOR: {s['meteor']}. CheXbert: {s['chexbert']}.",
        "",
        "## Text metrics",
        "",
        "| System | " + " | ".join(TEXT_METRICS) + " |",
        "|---" * (len(TEXT_METRICS) + 1) + "|",
    ]
    for name, entry in metrics["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(entry["text"].get(m)) for m in TEXT_METRICS) + " |")
    for name, reason in metrics.get("unavailable_systems", {}).items():
        lines.append(f"| {name} | unavailable: {reason} |" + " |" * (len(TEXT_METRICS) - 1))
    lines += [
        "",
        "## Clinical F1",
        "",
        "CheXpert-rule = saerad's rule labeller (never CheXbert). Uncertain labels counted as positive (f1chexbert, "
        "CheXagent) or as negative (LLaVA-Rad).",
        "",
        "| System | Labeller | Uncertain | micro F1-14 | macro F1-14 | micro F1-5 | macro F1-5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in metrics["systems"].items():
        for labeller, title in (("chexpert_rule", "CheXpert-rule"), ("chexbert", "CheXbert")):
            block = entry[labeller]
            if "unavailable" in block:
                lines.append(f"| {name} | {title} | - | unavailable: {block['unavailable']} | | | |")
                continue
            for convention, label in (("uncertain_positive", "as positive"), ("uncertain_negative", "as negative")):
                cells = " | ".join(_cell(block[convention][k]) for k in F1_KEYS)
                lines.append(f"| {name} | {title} | {label} | {cells} |")
    lines += ["", "## Per-condition F1 (uncertain as positive)", ""]
    columns = []
    for name, entry in metrics["systems"].items():
        for labeller, title in (("chexpert_rule", "rule"), ("chexbert", "CheXbert")):
            if "unavailable" not in entry[labeller]:
                columns.append((f"{name} ({title})", entry[labeller]["uncertain_positive"]["per_condition"]))
    lines.append("| Condition | " + " | ".join(c[0] for c in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for condition in CONDITIONS:
        lines.append(f"| {condition} | " + " | ".join(_cell(c[1][condition]) for c in columns) + " |")
    return "\n".join(lines) + "\n"
