"""Make-style stages for long builds: run a stage only when its inputs, parameters or outputs changed.

A stage writes its outputs and then a stamp ``stamps/<stage>.json`` holding fingerprints of its
inputs, its parameters and the sha256 of its outputs. It is skipped when its stamp matches what it
would be given now and its outputs are unchanged on disk; otherwise it runs (and the stages after it,
whose input fingerprints then change). Stages that take long resume inside themselves too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saerad.fileio import atomic_write_json, sha256_file

log = logging.getLogger(__name__)


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def path_fingerprint(path: Path) -> str:
    """sha256 over the content of a file, or of every file under a directory."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return fingerprint([(p.relative_to(path).as_posix(), sha256_file(p)) for p in files])


def studies_fingerprint(studies: Sequence, *, with_text: bool) -> str:
    """Image identity by (id, size, mtime), make-style: hashing every image of MIMIC-CXR would take hours."""
    rows = []
    for s in studies:
        for path, image_id in zip(s.image_paths, s.image_ids, strict=True):
            st = path.stat() if path.exists() else None
            rows.append([image_id, s.patient_id, st.st_size if st else None, st.st_mtime_ns if st else None])
        if with_text:
            rows.append([s.study_id, s.findings, s.impression, dict(s.labels) if s.labels else None])
    return fingerprint(rows)


@dataclass
class Stage:
    name: str
    inputs: dict[str, str | None]
    params: dict[str, Any]
    outputs: list[Path]
    run: Callable[[], None]


def stamp_path(work: Path, name: str) -> Path:
    return work / "stamps" / f"{name}.json"


def is_current(work: Path, stage: Stage) -> bool:
    path = stamp_path(work, stage.name)
    if not path.is_file() or not all(p.exists() for p in stage.outputs):
        return False
    stamp = json.loads(path.read_text(encoding="utf-8"))
    if stamp.get("inputs") != stage.inputs or stamp.get("params") != json.loads(json.dumps(stage.params, default=str)):
        return False
    return stamp.get("outputs") == {p.name: path_fingerprint(p) for p in stage.outputs}


def run_stage(work: Path, stage: Stage, *, force: bool = False) -> bool:
    """Run ``stage`` unless it is current; returns whether it ran."""
    if not force and is_current(work, stage):
        log.info("stage %s is current: skipped", stage.name)
        return False
    log.info("stage %s: running", stage.name)
    stamp_path(work, stage.name).unlink(missing_ok=True)
    stage.run()
    missing = [p for p in stage.outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name} did not produce {missing}")
    stamp = {
        "stage": stage.name,
        "inputs": stage.inputs,
        "params": stage.params,
        "outputs": {p.name: path_fingerprint(p) for p in stage.outputs},
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(stamp_path(work, stage.name), stamp, default=str)
    return True
