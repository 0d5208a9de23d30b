"""Grounded report schema: validation, plain text, RadFact form, FHIR R4 export."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from saerad.report.fhir import to_fhir, to_fhir_bundle
from saerad.report.schema import Box, FeatureRef, GroundedReport, Sentence


def _report(boxes=None) -> GroundedReport:
    effusion = FeatureRef(id=3, activation=1.5, description="Small left pleural effusion.", score=0.81)
    heart = FeatureRef(id=11, activation=0.7, description="Cardiomegaly.", score=0.74)
    return GroundedReport(
        findings=[
            Sentence(text="Small left pleural effusion.", features=[effusion], boxes=boxes),
            Sentence(text="Cardiomegaly.", features=[heart]),
        ],
        features=[effusion, heart, FeatureRef(id=40, activation=0.2, description="", usable=False)],
        bundle={"name": "tiny", "version": "1"},
    )


def test_box_validation():
    Box(x_min=0.1, y_min=0.2, x_max=0.3, y_max=0.4)
    with pytest.raises(ValidationError):
        Box(x_min=0.5, y_min=0.2, x_max=0.3, y_max=0.4)
    with pytest.raises(ValidationError):
        Box(x_min=-0.1, y_min=0.2, x_max=0.3, y_max=1.4)


def test_text_json_and_radfact():
    report = _report(boxes=[Box(x_min=0.5, y_min=0.5, x_max=0.9, y_max=0.95)])
    assert report.text() == "Small left pleural effusion. Cardiomegaly."
    data = json.loads(report.model_dump_json())
    assert data["research_use_only"] is True
    assert data["findings"][1]["boxes"] is None and data["findings"][1]["heatmap"] is None
    assert data["findings"][0]["features"][0] == {
        "id": 3, "activation": 1.5, "strength": None, "description": "Small left pleural effusion.", "score": 0.81,
        "usable": True, "contribution": None,
    }
    assert data["status"] == "findings" and data["findings"][0]["rule"] is None
    assert report.to_radfact() == [
        {"text": "Small left pleural effusion.", "boxes": [{"x_min": 0.5, "y_min": 0.5, "x_max": 0.9, "y_max": 0.95}]},
        {"text": "Cardiomegaly.", "boxes": None},
    ]
    assert GroundedReport.model_validate(data) == report


def test_nothing_validated_says_so_in_text_but_scores_as_empty():
    from saerad.report.schema import NOTHING_VALIDATED

    report = GroundedReport(status="nothing_validated", findings=[], features=[])
    assert report.findings_text() == "" and report.text() == NOTHING_VALIDATED


def test_fhir_diagnostic_report():
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    report = _report(boxes=[Box(x_min=0.5, y_min=0.5, x_max=0.9, y_max=0.95)])
    resource = to_fhir(report, report_id="r1")
    DiagnosticReport.model_validate(resource)  # round-trips through the validator
    assert resource["status"] == "preliminary"
    assert resource["category"][0]["coding"][0]["code"] == "LP29684-5"
    assert resource["code"]["coding"][0] == {"system": "http://loinc.org", "code": "36554-4", "display": "XR Chest Single view"}
    assert resource["meta"]["security"][0]["code"] == "AIAST"
    text = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert text == report.text()
    observations = resource["contained"]
    assert [o["valueString"] for o in observations] == ["Small left pleural effusion.", "Cardiomegaly."]
    assert [r["reference"] for r in resource["result"]] == ["#finding-1", "#finding-2"]
    assert observations[0]["component"][0]["code"]["coding"][0]["code"] == "3"
    assert all(o["status"] == "preliminary" for o in observations)


def test_fhir_bundle_of_several_reports():
    bundle = to_fhir_bundle([_report(), _report()], ["a", "b"])
    assert bundle["type"] == "collection"
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a", "b"]
