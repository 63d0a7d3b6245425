"""Schema-driven fuzzing of the local host (schemathesis, from /api/openapi.json):
whatever a key holder sends, valid or not, the answer is no 5xx and conforms to the
published document (status codes, content types, headers, bodies).

Bounded and reproducible: a fixed seed, a fixed number of examples per operation
(about a minute on a 2-core machine), no example database carried between runs.
The backend is the fake submitter, so accepted runs cost nothing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

KEY = "fuzz-test-key"
SEED = 20261206
EXAMPLES_PER_OPERATION = 350
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def host(start_host, make_service):
    return start_host(make_service(MAX_CONCURRENT_RUNS="2"), key=KEY)


@pytest.mark.fuzz
@pytest.mark.timeout(400)
def test_fuzzed_requests_get_no_5xx_and_answers_conform_to_the_openapi_document(host, tmp_path):
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{host.url}/api/openapi.json",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", str(SEED),
        "--generation-database", "none",
        "--workers", "1",
        "--header", f"x-functions-key: {KEY}",
        "--request-timeout", "10",
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=380)
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "operations" in result.stdout.lower()  # it ran against the document


def test_the_document_is_valid_openapi_3_1():
    """Against the OpenAPI 3.1 meta-schema schemathesis validates documents with."""
    import schemathesis

    from triggers.openapi import openapi_document

    schemathesis.openapi.from_dict(openapi_document()).validate()
