"""Which instance of a study gets reported, decided from QIDO-RS attributes alone."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForProcessing,
    generate_uid,
)

from saerad.pacs.errors import NoFrontalImageError
from saerad.pacs.select import select_frontal

STUDY = generate_uid()


def _instance(view="PA", *, sop_class=ComputedRadiographyImageStorage, modality="CR", body_part="CHEST", rows=2000,
              cols=2000, series=1, number=1) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, generate_uid(), generate_uid()
    ds.SOPClassUID, ds.Modality = sop_class, modality
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns, ds.SeriesNumber, ds.InstanceNumber = rows, cols, series, number
    return ds


def test_pa_ranks_before_ap_and_other_objects_are_skipped_with_reasons():
    ap, pa, lateral = _instance("AP", series=1), _instance("PA", series=2), _instance("LL")
    sr = _instance(None, sop_class=Comprehensive3DSRStorage, modality="SR")
    raw = _instance("PA", sop_class=DigitalXRayImageStorageForProcessing, modality="DX")
    unknown_view, abdomen = _instance(None), _instance("AP", body_part="ABDOMEN")
    huge = _instance("PA", rows=20_000, cols=20_000)
    selection = select_frontal([ap, lateral, sr, pa, raw, unknown_view, abdomen, huge], max_pixels=64 * 2**20)
    assert [c.sop_uid for c in selection.candidates] == [pa.SOPInstanceUID, ap.SOPInstanceUID]
    assert selection.candidates[0].view == "PA"
    assert selection.skipped == {
        lateral.SOPInstanceUID: "lateral view",
        sr.SOPInstanceUID: "not a projection radiograph (SR object)",
        raw.SOPInstanceUID: "a DX 'for processing' image (raw detector data, not for display)",
        unknown_view.SOPInstanceUID: "no view position recorded (choose it explicitly if it is frontal)",
        abdomen.SOPInstanceUID: "not a chest image (body part examined)",
        huge.SOPInstanceUID: "too large (20000 x 20000 pixels x 1 frames)",
    }


def test_no_frontal_image_is_a_clear_error():
    lateral = _instance("LL")
    with pytest.raises(NoFrontalImageError, match=r"none of the study's 2 instance\(s\).*lateral view"):
        select_frontal([lateral, _instance("RL")], max_pixels=2**26)


def test_an_explicit_instance_skips_the_view_checks_but_not_the_object_checks():
    lateral, sr = _instance("LL"), _instance(None, sop_class=Comprehensive3DSRStorage)
    chosen = select_frontal([lateral, sr], max_pixels=2**26, instance=lateral.SOPInstanceUID)
    assert [c.sop_uid for c in chosen.candidates] == [lateral.SOPInstanceUID]
    with pytest.raises(NoFrontalImageError, match="requested instance cannot be reported"):
        select_frontal([lateral, sr], max_pixels=2**26, instance=sr.SOPInstanceUID)
    with pytest.raises(NoFrontalImageError, match="no instance with the requested"):
        select_frontal([lateral], max_pixels=2**26, instance=generate_uid())
