"""Errors of the PACS exchange, each with a code a client or an operator can act on.

None of them maps to a 5xx: the PACS failing is not the service failing, and a study without a usable
image is a property of the study. Messages never quote DICOM attribute values.
"""

from __future__ import annotations

from saerad.errors import SaeradError


class PacsError(SaeradError):
    """The PACS could not be reached or refused a request (codes ``pacs_*``)."""

    code = "pacs_error"
    http_status = 424  # Failed Dependency: the request was fine, the system behind us was not


class StudyNotFoundError(SaeradError):
    code = "study_not_found"
    http_status = 404


class NoFrontalImageError(SaeradError):
    """The study holds no image saerad can report: no frontal chest radiograph, or none decodes."""

    code = "no_frontal_image"
    http_status = 422
