"""One finding sentence per condition: the words saerad writes when it states a finding.

Label-driven feature descriptions, the normal statement of a report and the reference texts of
label-only datasets (nih-cxr14) are all written from this table, so a finding reads the same
wherever it appears and the rule labeller maps every sentence back to exactly its condition
(checked in ``tests/radtext/test_radtext_phrasebook.py``). Sentences follow plain radiology
reporting style ("There is a pleural effusion."), without laterality or severity: a label says
neither.
"""

from __future__ import annotations

from saerad.radtext.conditions import CONDITIONS, NO_FINDING

# The normal statement: written when no finding speaks and the normal features do.
NORMAL_STATEMENT = "No acute cardiopulmonary abnormality."

FINDING_SENTENCES: dict[str, str] = {
    "Enlarged Cardiomediastinum": "The cardiomediastinal silhouette is enlarged.",
    "Cardiomegaly": "The heart is enlarged.",
    "Lung Opacity": "There are patchy airspace opacities.",
    "Lung Lesion": "There is a pulmonary nodule or mass.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is consolidation.",
    "Pneumonia": "The findings are consistent with pneumonia.",
    "Atelectasis": "There is atelectasis.",
    "Pneumothorax": "There is a pneumothorax.",
    "Pleural Effusion": "There is a pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a fracture.",
    "Support Devices": "Support devices are in place.",
    NO_FINDING: NORMAL_STATEMENT,
}

# Findings outside the 14 conditions that label-only datasets carry (NIH ChestX-ray14). The rule
# labeller reads emphysema and hernia as "another abnormality" (they block No Finding) and, like
# CheXpert's labeller, fibrosis as Lung Opacity.
EXTRA_SENTENCES: dict[str, str] = {
    "Emphysema": "There is emphysema.",
    "Fibrosis": "There are fibrotic changes.",
    "Hernia": "There is a hiatal hernia.",
}

assert set(FINDING_SENTENCES) == set(CONDITIONS)


def finding_sentence(finding: str) -> str:
    """The sentence for a condition (or an extra finding); ``KeyError`` names the known ones."""
    sentence = FINDING_SENTENCES.get(finding) or EXTRA_SENTENCES.get(finding)
    if sentence is None:
        known = ", ".join([*FINDING_SENTENCES, *EXTRA_SENTENCES])
        raise KeyError(f"no sentence for finding {finding!r}; known: {known}")
    return sentence


def findings_text(findings: set[str] | frozenset[str]) -> str:
    """A findings section from a set of findings, in condition order (extras last): the
    deterministic sentence template of label-derived reference texts. No finding -> the normal
    statement."""
    ordered = [c for c in CONDITIONS if c in findings and c != NO_FINDING]
    ordered += sorted(f for f in findings if f in EXTRA_SENTENCES)
    unknown = set(findings) - set(FINDING_SENTENCES) - set(EXTRA_SENTENCES)
    if unknown:
        raise KeyError(f"no sentence for finding(s) {sorted(unknown)}")
    if not ordered:
        return NORMAL_STATEMENT
    return " ".join(finding_sentence(f) for f in ordered)
