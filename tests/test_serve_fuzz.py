"""Fuzzing the real server: whatever a client sends, the answer is a 2xx or a 4xx with a message, never a 500."""

import json
import os

import httpx
import pytest
from fixtures import LexiconClassifier, serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatelens.evaluation.thresholds import Thresholds
from hatelens.serving.app import create_app

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
# bodies shaped like the API's, with any values in the fields, beside arbitrary JSON
CLASSIFY_BODIES = st.fixed_dictionaries(
    {"texts": st.one_of(st.lists(st.text(max_size=60), max_size=8), JSON_VALUES)},
    optional={"groups": st.one_of(st.lists(st.text(max_size=20) | st.none(), max_size=8), JSON_VALUES)},
) | JSON_VALUES
FEEDBACK_BODIES = st.fixed_dictionaries(
    {"id": st.text(max_size=30) | JSON_VALUES, "label": st.sampled_from(["hate", "normal", "HATE", ""]) | JSON_VALUES},
    optional={"reviewer": st.text(max_size=20) | JSON_VALUES},
) | JSON_VALUES
# the probe's scale (issue 14: 10,000 bodies): HATELENS_FUZZ_EXAMPLES=10000 pytest tests/test_serve_fuzz.py
EXAMPLES = int(os.environ.get("HATELENS_FUZZ_EXAMPLES", "300"))
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"])


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    app = create_app(LexiconClassifier(), thresholds=Thresholds(threshold=0.5),
                     db_path=str(tmp_path_factory.mktemp("fuzz") / "predictions.sqlite"))
    with serving(app) as base:
        yield base


def _post(url: str, path: str, content: bytes, content_type: str) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=30)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/classify", "/v1/feedback"]), classify=CLASSIFY_BODIES, feedback=FEEDBACK_BODIES,
       content_type=CONTENT_TYPES)
def test_no_json_body_gets_a_500(url, path, classify, feedback, content_type):
    body = classify if path == "/v1/classify" else feedback
    response = _post(url, path, json.dumps(body).encode(), content_type)
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in (200, 400, 404, 413, 415, 422), response.status_code


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/classify", "/v1/feedback"]), content=st.binary(max_size=300))
def test_no_byte_string_gets_a_500(url, path, content):
    response = _post(url, path, content, "application/json")
    assert response.status_code < 500, (response.status_code, response.text)
