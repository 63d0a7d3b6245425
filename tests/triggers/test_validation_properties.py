"""Whatever bytes arrive as a body, parsing ends in a request or a RequestError with
a 4xx: no other exception reaches the handler that answers 500 (issue 10)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.request import TrainingRequest
from pipeline.verification import VerificationRequest
from triggers.validation import (
    RequestError,
    parse_training_request,
    parse_verification_request,
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def fields_of(model) -> st.SearchStrategy[dict]:
    """Objects with the model's own field names (so validators run), any values."""
    return st.fixed_dictionaries({}, optional={name: json_values for name in model.model_fields})


def encoded(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included: not JSON, refused


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(encoded),
    fields_of(TrainingRequest).map(encoded),
    fields_of(VerificationRequest).map(encoded),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n),
    st.integers(min_value=4000, max_value=6000).map(lambda n: b'{"params": {"seed": ' + b"7" * n),
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(bodies)
def test_any_body_is_a_request_or_a_4xx_request_error(body):
    for parse in (parse_training_request, parse_verification_request):
        try:
            parse(body)
        except RequestError as exc:
            assert 400 <= exc.status < 500 and exc.message
