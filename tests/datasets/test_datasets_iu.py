"""IU X-ray loader: a fake folder and the real report corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saerad.datasets import load_dataset
from saerad.errors import ConfigError


def test_fake_folder_with_images_and_projections(tmp_path: Path) -> None:
    rows = [
        {"uid": "CXR7", "findings": "Heart size normal.  Lungs clear.", "impression": "Normal.", "images": ["CXR7_IM-1-1001", "CXR7_IM-1-2001"]},
        {"uid": "CXR8", "findings": "", "impression": "No acute disease.", "images": ["CXR8_IM-2-1001"]},
    ]
    (tmp_path / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "CXR7_IM-1-1001.png").write_bytes(b"png")
    (tmp_path / "images" / "7_IM-1-2001.dcm.png").write_bytes(b"png")  # Kaggle-style name
    (tmp_path / "projections.csv").write_text("uid,filename,projection\n7,7_IM-1-1001.dcm.png,Lateral\n7,7_IM-1-2001.dcm.png,Frontal\n")
    studies = load_dataset("iu-xray", tmp_path)
    assert [s.study_id for s in studies] == ["CXR7", "CXR8"]
    assert studies[0].image_ids == ("CXR7_IM-1-2001", "CXR7_IM-1-1001") and studies[0].view == "Frontal"
    assert studies[0].findings == "Heart size normal. Lungs clear."
    assert studies[1].findings is None and studies[1].image_paths == ()
    assert [s.study_id for s in load_dataset("iu-xray", tmp_path, require_findings=True)] == ["CXR7"]
    with pytest.raises(ConfigError):
        load_dataset("iu-xray", tmp_path / "missing")


def test_real_iu_reports(shared_data: Path) -> None:
    root = shared_data / "iu-reports"
    if not root.is_dir():
        pytest.skip("iu-reports absent")
    studies = load_dataset("iu-xray", root)
    assert len(studies) == 3955
    assert sum(s.findings is not None for s in studies) == 3425
    assert all(s.image_paths == () for s in studies)  # no images shipped
