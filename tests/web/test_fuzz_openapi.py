"""Schemathesis against the served OpenAPI spec: no input gets a 5xx or an answer the spec does not allow.

Bounded: 40 examples per operation, no deadline, in-process over WSGI (about
half a minute in all). Runs against the app as deployed without tokens; the token
checks have tests of their own (tests/web/test_auth.py).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api_or_its_spec(case):
    # Every default check (no 5xx; status, content type, body and headers as the spec
    # says; schema-invalid data refused) but one: a few rules cannot be written in
    # OpenAPI 3.0 (the program, cmd's first item, is not empty; env under 64 KiB in
    # all; gpu_model needs gpus), so some schema-valid bodies are rightly a 422.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
