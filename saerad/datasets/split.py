"""Deterministic patient-level splits for datasets without an official one.

A patient's side depends only on a hash of its id, so every stage (evaluation, diffusion training,
benchmarks) draws the same split on any machine without a split file to carry around.
"""

from __future__ import annotations

import hashlib


def patient_unit(patient_id: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the patient id (and ``salt``, to draw an independent split)."""
    key = f"{salt}:{patient_id}" if salt else str(patient_id)
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
