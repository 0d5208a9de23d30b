"""Reading report tables (CSV or JSONL with an id and a text column) and writing files atomically."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text

ID_FIELDS = ("id", "study_id", "uid", "image_id", "dicom_id")
TEXT_FIELDS = ("text", "report", "prediction", "findings", "generated", "reference")


def read_table(path: str | Path) -> list[dict]:
    """Rows of a ``.csv`` or ``.jsonl``/``.ndjson``/``.json`` (list of objects) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                return data
            raise ConfigError(f"{path}: a .json input must be a list of objects")
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from exc
    raise ConfigError(f"{path}: use a .csv or .jsonl file")


def _pick(fields: Iterable[str], wanted: str | None, candidates: Sequence[str], what: str, path: Path) -> str:
    fields = list(fields)
    if wanted:
        if wanted not in fields:
            raise ConfigError(f"{path} has no {what} column {wanted!r} (columns: {', '.join(fields)})")
        return wanted
    for name in candidates:
        if name in fields:
            return name
    raise ConfigError(f"{path}: cannot tell the {what} column; name it with --{what}-field (columns: {', '.join(fields)})")


def read_reports(path: str | Path, *, id_field: str | None = None, text_field: str | None = None) -> tuple[dict[str, str], str]:
    """``({id: text}, id column name)``; missing text becomes ``""``; duplicate ids are an error."""
    path = Path(path)
    rows = read_table(path)
    if not rows:
        raise ConfigError(f"{path} has no rows")
    id_col = _pick(rows[0].keys(), id_field, ID_FIELDS, "id", path)
    text_col = _pick(rows[0].keys(), text_field, TEXT_FIELDS, "text", path)
    out: dict[str, str] = {}
    for row in rows:
        key = str(row.get(id_col, "")).strip()
        if not key:
            raise ConfigError(f"{path}: a row has an empty {id_col!r}")
        if key in out:
            raise ConfigError(f"{path}: duplicate id {key!r}")
        value = row.get(text_col)
        out[key] = "" if value is None else str(value)
    return out, id_col


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))
