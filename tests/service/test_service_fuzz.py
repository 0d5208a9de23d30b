"""Schema fuzzing of the OpenAPI document (schemathesis 4): no request may produce a 5xx.

Bounded twice so CI time stays predictable: a few examples per operation and mode (valid and
invalid data), and an overall wall-clock budget after which remaining examples are skipped.
"""

from __future__ import annotations

import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

BUDGET_S = 45.0
EXAMPLES_PER_MODE = 20


def test_openapi_fuzz_has_no_server_errors(server):
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert hasattr(result, "ok"), f"invalid operation in the OpenAPI document: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 8
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    calls = {"n": 0}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                if time.monotonic() > deadline:
                    return
                response = case.call(base_url=server.url, timeout=60)
                calls["n"] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:200]}")
                elif response.status_code >= 400:
                    body = response.json()
                    assert set(body["error"]) >= {"code", "message"}, body

            try:
                check()
            except Unsatisfiable:
                # No invalid input exists for an operation without parameters (e.g. /healthz).
                assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
    assert calls["n"] >= len(operations)  # the budget left room for every operation
