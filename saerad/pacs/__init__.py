"""PACS integration over DICOMweb: find a study's frontal image, pull it, store the DICOM SR back.

``settings`` says how to reach the PACS, ``client`` speaks QIDO-RS / WADO-RS / STOW-RS, ``select``
decides which image to report, ``study`` runs the whole exchange for the CLI and the service.
"""

from saerad.pacs.errors import NoFrontalImageError, PacsError, StudyNotFoundError
from saerad.pacs.settings import PacsSettings

__all__ = ["NoFrontalImageError", "PacsError", "PacsSettings", "StudyNotFoundError"]
