"""A DICOMweb client (``dicomweb-client``) that turns every transport failure into a :class:`PacsError`.

Three transactions are used: QIDO-RS to list a study's instances with the attributes that decide
which image to report, WADO-RS to pull one instance in the transfer syntax it is stored in (no
server-side transcoding; :mod:`saerad.imaging` decodes JPEG, JPEG 2000 and native pixels), and
STOW-RS to store the SR back into the study.

``dicomweb-client`` logs study and instance UIDs at INFO and request headers (credentials) at DEBUG,
so its logger is held at WARNING; urllib3 logs every request URL (which holds the UIDs) at DEBUG, so
its connection pool logger is held at INFO.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from saerad.pacs.errors import PacsError, StudyNotFoundError
from saerad.pacs.settings import PacsSettings

if TYPE_CHECKING:
    from pydicom import Dataset

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

#: Attributes asked of QIDO-RS for every instance: what the frontal-image choice needs.
QIDO_FIELDS = (
    "00080016",  # SOPClassUID
    "00080060",  # Modality
    "00080008",  # ImageType
    "00180015",  # BodyPartExamined
    "00185101",  # ViewPosition
    "00200011",  # SeriesNumber
    "00200013",  # InstanceNumber
    "00280008",  # NumberOfFrames
    "00280010",  # Rows
    "00280011",  # Columns
)


@dataclass(frozen=True)
class StoredInstance:
    """What STOW-RS reported for a stored instance."""

    sop_instance_uid: str
    retrieve_url: str | None


class PacsClient:
    """One configured DICOMweb endpoint. Each call opens and closes its own HTTP session, so one client
    may serve several threads."""

    def __init__(self, settings: PacsSettings) -> None:
        if settings.url is None:
            raise PacsError("no PACS configured: set --url or SAERAD_PACS_URL", code="no_pacs_configured")
        self.settings = settings
        self.url = settings.url

    @contextlib.contextmanager
    def _request(self, action: str, *, not_found: type[Exception] | None = None) -> Iterator[Any]:
        """A ``DICOMwebClient`` on a fresh session, closed afterwards; its errors become PacsErrors."""
        import requests

        with requests.Session() as session, _TranslateErrors(self.url, action, not_found):
            yield self._client(session)

    def _client(self, session):
        from dicomweb_client.api import DICOMwebClient

        if self.settings.username:
            password = self.settings.password.get_secret_value() if self.settings.password else ""
            session.auth = (self.settings.username, password)
        session.verify = str(self.settings.ca_bundle) if self.settings.ca_bundle else self.settings.tls_verify
        try:
            client = DICOMwebClient(
                self.url, session=session, headers=self.settings.request_headers(), timeout=self.settings.timeout_s
            )
        except ValueError as exc:
            raise PacsError(f"the PACS URL {self.url!r} is malformed", code="pacs_bad_url") from exc
        client.set_http_retry_params(retry=self.settings.retries > 1, max_attempts=self.settings.retries,
                                     wait_exponential_multiplier=500)
        return client

    def search_instances(self, study_uid: str) -> list[Dataset]:
        """Every instance of the study with :data:`QIDO_FIELDS`; :class:`StudyNotFoundError` if none."""
        from pydicom import Dataset

        with self._request("search the study (QIDO-RS)", not_found=StudyNotFoundError) as dicomweb:
            results = dicomweb.search_for_instances(
                study_instance_uid=study_uid, fields=list(QIDO_FIELDS), get_remaining=True
            )
        try:
            instances = [Dataset.from_json(item) for item in results]
        except (ValueError, TypeError, KeyError) as exc:
            raise PacsError("the PACS answered the study search with malformed DICOM JSON",
                            code="pacs_bad_response") from exc
        if not instances:
            raise StudyNotFoundError("the PACS has no instances in this study (unknown Study Instance UID?)")
        return instances

    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as a DICOM Part 10 file, in the transfer syntax the PACS stores it in."""
        with self._request("retrieve the image (WADO-RS)") as dicomweb:
            dataset = dicomweb.retrieve_instance(
                study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
            )
        buffer = io.BytesIO()
        try:
            dataset.save_as(buffer, enforce_file_format=True)
        except (ValueError, AttributeError) as exc:
            raise PacsError("the PACS returned an instance that is not a valid DICOM file",
                            code="pacs_bad_response") from exc
        return buffer.getvalue()

    def store(self, dataset: Dataset) -> StoredInstance:
        """STOW-RS into the dataset's study; :class:`PacsError` unless the PACS confirms it stored it."""
        with self._request("store the report (STOW-RS)") as dicomweb:
            reply = dicomweb.store_instances([dataset], study_instance_uid=str(dataset.StudyInstanceUID))
        failed = list(getattr(reply, "FailedSOPSequence", []) or [])
        stored = [
            item for item in getattr(reply, "ReferencedSOPSequence", []) or []
            if str(getattr(item, "ReferencedSOPInstanceUID", "")) == str(dataset.SOPInstanceUID)
        ]
        if failed or not stored:
            reason = failed[0].get("FailureReason") if failed else None
            raise PacsError(
                "the PACS did not store the report" + (f" (failure reason {reason})" if reason is not None else ""),
                code="pacs_store_failed",
            )
        url = stored[0].get("RetrieveURL")
        return StoredInstance(sop_instance_uid=str(dataset.SOPInstanceUID), retrieve_url=str(url) if url else None)


class _TranslateErrors:
    """Context manager: requests/dicomweb-client exceptions -> PacsError with a message for the user."""

    def __init__(self, url: str, action: str, not_found: type[Exception] | None) -> None:
        self.url, self.action, self.not_found = url, action, not_found

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        import requests

        if exc is None:
            return False
        if isinstance(exc, requests.HTTPError):
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsError(
                    f"the PACS at {self.url} refused the credentials (HTTP {status}) when asked to {self.action}; "
                    "check SAERAD_PACS_USERNAME/PASSWORD/TOKEN/HEADERS",
                    code="pacs_unauthorized",
                ) from exc
            if status == 404 and self.not_found is not None:
                raise self.not_found("the PACS does not know this study (HTTP 404)") from exc
            raise PacsError(f"the PACS at {self.url} answered HTTP {status} when asked to {self.action}",
                            code="pacs_http_error") from exc
        if isinstance(exc, requests.Timeout):
            raise PacsError(f"the PACS at {self.url} did not answer in time when asked to {self.action}",
                            code="pacs_timeout") from exc
        if isinstance(exc, requests.ConnectionError):
            raise PacsError(f"cannot connect to the PACS at {self.url} to {self.action}",
                            code="pacs_unreachable") from exc
        if isinstance(exc, requests.RequestException):
            raise PacsError(f"the request to the PACS at {self.url} failed: {type(exc).__name__}",
                            code="pacs_error") from exc
        from pydicom.errors import InvalidDicomError

        if isinstance(exc, (ValueError, KeyError, IndexError, EOFError, InvalidDicomError)):
            # dicomweb-client's parsing of multipart/JSON replies, or pydicom's of the instance
            raise PacsError(f"the PACS sent a reply saerad cannot read when asked to {self.action}",
                            code="pacs_bad_response") from exc
        return False
