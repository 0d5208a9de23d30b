"""Hand-labelled sentence files and the labeller's score on them.

Format (TSV, ``#`` lines are comments, first other line is the header ``sentence<TAB>labels``)::

    No pleural effusion or pneumothorax.<TAB>Pleural Effusion=0; Pneumothorax=0; No Finding=1

``-`` means every condition is blank. Each sentence is labelled as a one-sentence report with
:func:`~saerad.radtext.labeler.label_report`, so No Finding logic applies.

Per-condition F1 treats each condition as a 4-way label (blank, 1, 0, -1): a true positive is an
exact match on a non-blank expected label; a non-blank prediction that differs is a false positive;
a non-blank expected label not matched is a false negative. Mention/negation/uncertainty F1 look
at one polarity across all conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saerad.radtext.conditions import CONDITIONS
from saerad.radtext.labeler import NEGATIVE, POSITIVE, UNCERTAIN, label_report


@dataclass(frozen=True)
class Case:
    sentence: str
    expected: dict[str, int]


def load_cases(path: str | Path) -> list[Case]:
    rows = [line.rstrip("\n") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.strip() and not r.startswith("#")]
    if not rows or rows[0].split("\t")[:2] != ["sentence", "labels"]:
        raise ValueError(f"{path}: first non-comment line must be the header 'sentence<TAB>labels'")
    cases = []
    for row in rows[1:]:
        sentence, labels = row.split("\t")
        expected: dict[str, int] = {}
        if labels.strip() != "-":
            for item in labels.split(";"):
                name, value = item.strip().split("=")
                if name not in CONDITIONS:
                    raise ValueError(f"{path}: unknown condition {name!r}")
                expected[name] = int(value)
        cases.append(Case(sentence, expected))
    return cases


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def score_cases(cases: list[Case]) -> dict:
    """Per-condition and per-polarity F1, cell accuracy, exact sentence accuracy, and the misses."""
    per = {c: [0, 0, 0] for c in CONDITIONS}
    polarity = {POSITIVE: [0, 0, 0], NEGATIVE: [0, 0, 0], UNCERTAIN: [0, 0, 0]}
    cells = correct_cells = exact = 0
    misses = []
    for case in cases:
        got = label_report(case.sentence)
        ok = True
        for c in CONDITIONS:
            want, have = case.expected.get(c), got[c]
            cells += 1
            correct_cells += want == have
            ok &= want == have
            if have is not None and have == want:
                per[c][0] += 1
                polarity[have][0] += 1
                continue
            if have is not None:
                per[c][1] += 1
                polarity[have][1] += 1
            if want is not None:
                per[c][2] += 1
                polarity[want][2] += 1
        exact += ok
        if not ok:
            misses.append((case.sentence, case.expected, {k: v for k, v in got.items() if v is not None}))
    return {
        "n": len(cases),
        "cell_accuracy": correct_cells / max(cells, 1),
        "sentence_accuracy": exact / max(len(cases), 1),
        "per_condition": {c: {"f1": _f1(*v), "support": v[0] + v[2]} for c, v in per.items()},
        "per_polarity": {name: _f1(*polarity[value]) for name, value in (("positive", POSITIVE), ("negative", NEGATIVE), ("uncertain", UNCERTAIN))},
        "misses": misses,
    }


def format_scores(title: str, scores: dict) -> str:
    lines = [
        f"### {title}: {scores['n']} sentences",
        "",
        f"cell accuracy {scores['cell_accuracy']:.3f}, exact sentences {scores['sentence_accuracy']:.3f}; "
        + ", ".join(f"{k} F1 {v:.3f}" for k, v in scores["per_polarity"].items()),
        "",
        "| Condition | F1 | support |",
        "|---|---|---|",
    ]
    for condition, row in scores["per_condition"].items():
        lines.append(f"| {condition} | {row['f1']:.3f} | {row['support']} |")
    return "\n".join(lines) + "\n"
