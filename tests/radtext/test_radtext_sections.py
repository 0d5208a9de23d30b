"""Section parser on MIMIC-CXR-style report text (written for the test)."""

from __future__ import annotations

from saerad.radtext.sections import extract_findings, extract_impression, parse_sections

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___-year-old with cough.

 COMPARISON:  None.

 FINDINGS:

 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax.  Heart size is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_parse_mimic_style_report() -> None:
    sections = parse_sections(REPORT)
    assert sections["indication"] == "___-year-old with cough."
    assert extract_findings(REPORT) == (
        "The lungs are clear without focal consolidation. No pleural effusion or pneumothorax. Heart size is normal."
    )
    assert extract_impression(REPORT) == "No acute cardiopulmonary process."


def test_merged_and_missing_sections() -> None:
    merged = "INDICATION: Fever.\nFINDINGS AND IMPRESSION: Small left effusion. Heart: upper normal."
    assert extract_findings(merged) == "Small left effusion. Heart: upper normal."
    assert extract_impression(merged) == "Small left effusion. Heart: upper normal."
    only_impression = "EXAM: Chest.\nIMPRESSION: Mild edema."
    assert extract_findings(only_impression) is None
    assert extract_impression(only_impression) == "Mild edema."
    assert extract_findings("") is None
    assert extract_findings("Findings: lowercase header works.") == "lowercase header works."
