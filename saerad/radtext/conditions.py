"""The 14 CheXpert conditions in the order CheXbert's heads use (Smit et al., 2020; docs/method.md#evaluation).

Every label matrix in saerad has its columns in this order, so a column index means the same thing
for the rule labeller, CheXbert and the F1 code.
"""

from __future__ import annotations

CONDITIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

# The subset most papers report as "F1-5" (CheXpert competition conditions).
CONDITIONS_5: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

# A condition's label in a sentence or report: stated, stated absent, hedged (None: not mentioned).
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

INDEX: dict[str, int] = {name: i for i, name in enumerate(CONDITIONS)}
INDEX_5: tuple[int, ...] = tuple(INDEX[name] for name in CONDITIONS_5)
