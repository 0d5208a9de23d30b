"""Which part of a chest X-ray report a statement belongs to.

Radiologists read a film in a fixed order and write the findings section in it; the composer sorts
sentences by these regions so a generated report reads like one: lines/tubes/devices, lungs, pleura,
heart and mediastinum, bones, other. Keyword rules are enough here because descriptions are short,
normalised finding statements; condition labels are the fallback when no keyword matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum


class Region(IntEnum):
    """Report order: a lower value is written first."""

    DEVICES = 0
    LUNGS = 1
    PLEURA = 2
    HEART_MEDIASTINUM = 3
    BONES = 4
    OTHER = 5


_KEYWORDS: dict[Region, tuple[str, ...]] = {
    Region.DEVICES: (
        r"tube", r"line", r"catheter", r"pacemaker", r"pacer", r"defibrillator", r"icd", r"lead",
        r"device", r"port", r"picc", r"drain", r"stent", r"clip", r"wire", r"electrode", r"valve",
        r"prosthe\w*", r"hardware", r"sternotomy", r"tracheostomy", r"cannula", r"ecmo", r"monitor",
    ),
    Region.PLEURA: (
        r"pleura\w*", r"effusions?", r"pneumothora\w*", r"costophrenic", r"hydropneumothorax",
        r"empyema", r"fissure",
    ),
    Region.HEART_MEDIASTINUM: (
        r"heart", r"cardiac", r"cardio\w*", r"cardiomegaly", r"mediastin\w*", r"aort\w*", r"hil\w+",
        r"pericardi\w*", r"trachea", r"silhouette", r"vascular", r"vasculature", r"pulmonary arter\w*",
    ),
    Region.BONES: (
        r"bones?", r"bony", r"osseous", r"ribs?", r"fractures?", r"spine", r"spinal", r"vertebra\w*",
        r"clavic\w*", r"scapula\w*", r"humer\w*", r"shoulders?", r"scoliosis", r"kyphosis",
        r"degenerative", r"osteo\w*", r"sternum",
    ),
    Region.LUNGS: (
        r"lungs?", r"pulmonary", r"lobes?", r"lobar", r"opacit\w*", r"consolidat\w*", r"pneumoni\w*",
        r"atelecta\w*", r"edema", r"oedema", r"nodul\w*", r"mass(es)?", r"infiltrat\w*", r"airspace",
        r"air-space", r"ground[- ]glass", r"interstitial", r"reticul\w*", r"parenchym\w*", r"aerat\w*",
        r"emphysema\w*", r"hyperinfla\w*", r"bronch\w*", r"apex", r"apices", r"bases?", r"basilar",
        r"granulom\w*", r"cavit\w*", r"lesions?", r"scarring", r"fibros\w*", r"congestion",
    ),
}

_PATTERNS = {region: re.compile(r"\b(" + "|".join(words) + r")\b") for region, words in _KEYWORDS.items()}

_CONDITION_REGION: dict[str, Region] = {
    "Support Devices": Region.DEVICES,
    "Lung Opacity": Region.LUNGS,
    "Lung Lesion": Region.LUNGS,
    "Edema": Region.LUNGS,
    "Consolidation": Region.LUNGS,
    "Pneumonia": Region.LUNGS,
    "Atelectasis": Region.LUNGS,
    "Pneumothorax": Region.PLEURA,
    "Pleural Effusion": Region.PLEURA,
    "Pleural Other": Region.PLEURA,
    "Enlarged Cardiomediastinum": Region.HEART_MEDIASTINUM,
    "Cardiomegaly": Region.HEART_MEDIASTINUM,
    "Fracture": Region.BONES,
}


def region_of(text: str, labels: Mapping[str, int | None] | None = None) -> Region:
    """The region a statement is about.

    A device keyword wins outright (a tube "projecting over the lung" is a device statement);
    otherwise the region named first in the sentence; otherwise the region of the first labelled
    condition; otherwise OTHER.
    """
    lowered = text.lower()
    if _PATTERNS[Region.DEVICES].search(lowered):
        return Region.DEVICES
    first: tuple[int, Region] | None = None
    for region, pattern in _PATTERNS.items():
        match = pattern.search(lowered)
        if match and (first is None or match.start() < first[0]):
            first = (match.start(), region)
    if first is not None:
        return first[1]
    for condition, value in (labels or {}).items():
        if value is not None and condition in _CONDITION_REGION:
            return _CONDITION_REGION[condition]
    return Region.OTHER
