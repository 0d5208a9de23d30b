"""What users inherit from each dataset: a description and its terms, shown in every bundle's
manifest and by ``saerad report``. A model trained on a dataset carries its licence and attribution."""

from __future__ import annotations

DATA_TERMS: dict[str, tuple[str, str]] = {
    "nih-cxr14": (
        'NIH ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on '
        'Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017), development '
        "subset: frontal chest X-rays with NIH finding labels mined from reports (no report text: descriptions "
        "come from the labels). Data provider: NIH Clinical Center, https://nihcc.app.box.com/v/ChestXray-NIHCC",
        "Unrestricted use with attribution: link the NIH Clinical Center download site "
        "(https://nihcc.app.box.com/v/ChestXray-NIHCC), acknowledge the NIH Clinical Center as the data provider "
        "and cite Wang et al., CVPR 2017",
    ),
    "covid-cxr": (
        "COVID-19 image data collection (Cohen et al., 2020), snapshot of 2020-06-22: frontal chest "
        "X-rays with free-text clinical case notes (not structured radiology reports)",
        "CC BY-NC-SA 4.0 (metadata; images CC BY-NC-SA 4.0, CC BY 4.0 or unstated): non-commercial "
        "research use only; models trained on it inherit the non-commercial terms",
    ),
    "mimic-cxr": (
        "MIMIC-CXR-JPG chest X-rays with MIMIC-CXR free-text reports (findings sections)",
        "PhysioNet Credentialed Health Data License 1.5.0: credentialed users only; do not share "
        "models or bundles that contain report text",
    ),
    "iu-xray": (
        "Indiana University Chest X-ray Collection (Open-i) with its radiology reports",
        "CC BY-NC-ND 4.0: non-commercial research use only",
    ),
    "folder": ("a local folder of X-rays (with reports.csv when present)", "unknown: set by the data's owner"),
}


def data_terms(dataset: str) -> tuple[str, str]:
    """(description, licence) of a dataset; a folder's when the name is unknown."""
    return DATA_TERMS.get(dataset, DATA_TERMS["folder"])
