"""Text cleaning, the metric normalisation and sentence splitting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from saerad.radtext.text import clean_text, normalize_report, split_sentences, tokenize


def test_clean_text() -> None:
    assert clean_text("  Heart   size\nnormal.\t ") == "Heart size normal."
    assert clean_text(None) == ""


def test_normalize_report_ptb_style() -> None:
    text = "The patient's heart is NOT enlarged (3.2 cm), can't exclude x-ray artifact; see note #2."
    assert normalize_report(text) == (
        "the patient 's heart is not enlarged -lrb- 3.2 cm -rrb- ca n't exclude x-ray artifact see note # 2"
    )
    assert tokenize("Cannot exclude effusion.") == ["can", "not", "exclude", "effusion"]
    assert normalize_report("") == "" and normalize_report(None) == ""


def test_split_sentences() -> None:
    text = "FINDINGS: Heart size normal. Lungs clear vs. mild\natelectasis.\n\n1. No effusion. 2. A 3.5 cm nodule? Yes!"
    assert split_sentences(text) == [
        "FINDINGS: Heart size normal.",
        "Lungs clear vs. mild atelectasis.",
        "No effusion.",
        "A 3.5 cm nodule?",
        "Yes!",
    ]
    assert split_sentences("   ") == []


def test_normalisation_agrees_with_coco_ptb_tokenizer(shared_data: Path) -> None:
    """The Python normalisation reproduces coco-caption's Java PTBTokenizer on real reports."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime")
    path = shared_data / "iu-reports" / "reports.jsonl"
    if not path.is_file():
        pytest.skip("iu-reports absent")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = [json.loads(line)["findings"] for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t][:400]
    java = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    same = sum(java[i][0] == normalize_report(t) for i, t in enumerate(texts))
    assert same / len(texts) >= 0.98
