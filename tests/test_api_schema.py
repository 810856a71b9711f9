"""Schemathesis against the served OpenAPI schema: no 500s, no schema violations (bounded)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.engine import Engine

from paywatch.config import AppConfig
from tests.support.api_helpers import make_api

EXAMPLES_PER_OPERATION = 40


@pytest.mark.slow
def test_no_server_errors_and_schema_conformance(engine: Engine, app_config: AppConfig) -> None:
    api = make_api(engine, app_config)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def exercise(case: schemathesis.Case) -> None:
            # Business rules (configured networks, decimals per asset) correctly reject some
            # schema-valid bodies with a 4xx; every other built-in check applies.
            case.call_and_validate(headers=api.headers(), excluded_checks=[positive_data_acceptance])

        exercise()
