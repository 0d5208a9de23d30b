"""FHIR transaction Bundle: DiagnosticReport + one Observation per sentence + Device, with ImagingStudy
and patient references for DICOM input; validated by fhir.resources (R4B models)."""

from __future__ import annotations

import base64

from dicom_builders import PATIENT_ID, make_radiograph

from saerad.report.fhir import DICOM_UID_SYSTEM, REGION_URL, to_fhir_transaction
from saerad.report.schema import Box, FeatureRef, GroundedReport, RuleEvidence, Sentence


def _report(boxes=None) -> GroundedReport:
    effusion = FeatureRef(id=3, activation=1.5, description="Small left pleural effusion.")
    heart = FeatureRef(id=11, activation=0.7, description="Cardiomegaly.")
    return GroundedReport(
        findings=[
            Sentence(text="Small left pleural effusion.", features=[effusion], boxes=boxes),
            Sentence(text="Cardiomegaly.", features=[heart],
                     rule=RuleEvidence(condition="Cardiomegaly", evidence=0.9, threshold=0.5, held_out_auroc=0.8)),
        ],
        features=[effusion, heart],
        bundle={"name": "tiny", "version": "1"},
    )


def _by_type(bundle: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return out


def test_transaction_bundle_of_a_dicom_report():
    from fhir.resources.R4B.bundle import Bundle

    source = make_radiograph()
    box = Box(x_min=0.5, y_min=0.5, x_max=0.9, y_max=0.95)
    bundle = to_fhir_transaction([_report(boxes=[box])], [source])
    Bundle.model_validate(bundle)  # the returned dict is itself valid
    assert bundle["type"] == "transaction"
    kinds = _by_type(bundle)
    assert [len(kinds[k]) for k in ("Device", "Observation", "DiagnosticReport")] == [1, 2, 1]
    assert all(e["request"]["method"] == "POST" and e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])

    device = kinds["Device"][0]
    assert device["request"]["ifNoneExist"].startswith("identifier=")
    assert {n["name"] for n in device["resource"]["deviceName"]} == {"saerad", "tiny 1"}

    report = kinds["DiagnosticReport"][0]["resource"]
    assert report["status"] == "preliminary" and report["meta"]["security"][0]["code"] == "AIAST"
    assert [r["reference"] for r in report["result"]] == [e["fullUrl"] for e in kinds["Observation"]]
    study = {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{source.StudyInstanceUID}"}
    assert report["imagingStudy"][0]["identifier"] == study
    assert report["subject"]["identifier"]["value"] == PATIENT_ID
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert text == "Small left pleural effusion. Cardiomegaly."

    first, second = (e["resource"] for e in kinds["Observation"])
    assert first["valueString"] == "Small left pleural effusion." and first["device"]["reference"] == device["fullUrl"]
    assert first["derivedFrom"][0]["identifier"] == study
    region = first["extension"][0]
    assert region["url"] == REGION_URL
    values = {e["url"]: e.get("valueDecimal", e.get("valueOid")) for e in region["extension"]}
    assert values == {"x_min": 0.5, "y_min": 0.5, "x_max": 0.9, "y_max": 0.95, "image": f"urn:oid:{source.SOPInstanceUID}"}
    assert "0.500, 0.500, 0.900, 0.950" in first["note"][0]["text"]
    assert "extension" not in second and second["component"][0]["code"]["coding"][0]["code"] == "11"
    assert second["note"] == [{"text": "Finding rule Cardiomegaly: evidence 0.900 >= threshold 0.500, held-out AUROC 0.80"}]


def test_png_report_has_no_study_or_patient_and_several_reports_share_one_device():
    bundle = to_fhir_transaction([_report(), _report()], [None, None])
    kinds = _by_type(bundle)
    assert len(kinds["Device"]) == 1 and len(kinds["DiagnosticReport"]) == 2 and len(kinds["Observation"]) == 4
    for entry in kinds["DiagnosticReport"]:
        assert "imagingStudy" not in entry["resource"] and "subject" not in entry["resource"]
