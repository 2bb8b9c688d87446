"""The server's limits, for real: long requests take turns, batch time limits, JSON only, no keys in URLs or
logs, the OpenAPI bodies (uvicorn on a loopback port, a tiny random Llama, a SQLite log)."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from fixtures import SERVE_THRESHOLDS, serve_app, serving

from hatelens.config import ServeLimits
from hatelens.serving.prediction_log import PredictionLog

THRESHOLDS = SERVE_THRESHOLDS
TEXTS = ["first post", "a second, longer post about people", "third"]


class Slow:
    """A classifier wrapper that takes `seconds_per_text` for each text (a long text, a slow model)."""

    def __init__(self, inner, seconds_per_text):
        self.inner, self.seconds_per_text = inner, seconds_per_text
        self.model_version, self.mode = inner.model_version, inner.mode

    def classify(self, texts, groups=None):
        import time

        time.sleep(self.seconds_per_text * len(texts))
        return self.inner.classify(texts, groups)


def test_a_long_request_takes_turns_with_short_ones(classifier, db_path):
    import time

    limits = ServeLimits(max_texts=64, max_batch_texts=4, max_wait_ms=1)
    with serving(serve_app(Slow(classifier, 0.05), db_path, limits=limits)) as url:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            long = pool.submit(client.post, f"{url}/v1/classify", json={"texts": [f"long {i}" for i in range(64)]})
            time.sleep(0.3)  # the long request is being served
            short = client.post(f"{url}/v1/classify", json={"texts": ["short"]})
            short_s = time.perf_counter() - started
            long_response = long.result()
            long_s = time.perf_counter() - started
    assert short.status_code == 200 and long_response.status_code == 200
    assert len(long_response.json()["results"]) == 64
    assert short_s < long_s / 2  # it was answered between the long request's pieces, not after them


def test_a_batch_past_its_time_limit_answers_503_and_the_server_goes_on(classifier, db_path):
    limits = ServeLimits(batch_timeout_s=0.2, max_wait_ms=1)
    with serving(serve_app(Slow(classifier, 0.6), db_path, limits=limits)) as url:
        late = httpx.post(f"{url}/v1/classify", json={"texts": ["a post"]}, timeout=30)
        limits_ok = httpx.get(f"{url}/healthz")
    assert late.status_code == 503 and "took longer than 0.2 s" in late.json()["error"]
    assert limits_ok.status_code == 200


def test_post_bodies_must_be_declared_json(classifier, db_path):
    body = json.dumps({"texts": ["a post"]})
    with serving(serve_app(classifier, db_path)) as url:
        plain = httpx.post(f"{url}/v1/classify", content=body, headers={"content-type": "text/plain"})
        form = httpx.post(f"{url}/v1/feedback", content='{"id": "x", "label": "hate"}',
                          headers={"content-type": "application/x-www-form-urlencoded"})
        none = httpx.post(f"{url}/v1/classify", content=body)
        charset = httpx.post(f"{url}/v1/classify", content=body,
                             headers={"content-type": "application/json; charset=utf-8"})
    assert [plain.status_code, form.status_code, none.status_code] == [415] * 3
    assert "Content-Type: application/json" in plain.json()["error"] and "'text/plain'" in plain.json()["error"]
    assert charset.status_code == 200
    assert PredictionLog(db_path).read()[0].request_id == charset.json()["request_id"]  # only the JSON one


def test_a_key_in_the_url_is_refused_and_never_logged(classifier, db_path, monkeypatch):
    import logging

    monkeypatch.setenv("HATELENS_TEST_KEY", "s3cret")
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    access_log = logging.getLogger("uvicorn.access")
    keep = Keep()
    with serving(serve_app(classifier, db_path, api_key_env="HATELENS_TEST_KEY")) as url:
        level = access_log.level
        access_log.setLevel(logging.INFO)
        access_log.addHandler(keep)
        try:
            in_url = httpx.post(f"{url}/v1/classify?api_key=s3cret", json={"texts": ["a"]})
            other_spelling = httpx.get(f"{url}/healthz?API-KEY=s3cret")
            other_query = httpx.get(f"{url}/healthz?probe=s3cret")
        finally:
            access_log.removeHandler(keep)
            access_log.setLevel(level)
    assert in_url.status_code == 400 and "Authorization: Bearer" in in_url.json()["error"]
    assert other_spelling.status_code == 400 and other_query.status_code == 200
    assert len(lines) == 3 and not any("s3cret" in line or "?" in line for line in lines)
    assert '"POST /v1/classify HTTP/1.1" 400' in lines[0]


def test_the_server_warns_without_an_api_key(classifier, db_path, monkeypatch, caplog):
    monkeypatch.delenv("HATELENS_TEST_KEY", raising=False)
    with caplog.at_level("WARNING", logger="hatelens.serving.app"):
        serve_app(classifier, db_path, api_key_env="HATELENS_TEST_KEY")
    assert any("HATELENS_TEST_KEY is not set: anyone who can reach this server" in record.getMessage()
               for record in caplog.records)
    monkeypatch.setenv("HATELENS_TEST_KEY", "s3cret")
    caplog.clear()
    with caplog.at_level("WARNING", logger="hatelens.serving.app"):
        serve_app(classifier, db_path, api_key_env="HATELENS_TEST_KEY")
    assert not caplog.records


def test_the_openapi_schema_declares_the_request_bodies(classifier, db_path):
    with serving(serve_app(classifier, db_path)) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
    classify = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    feedback = spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert classify["required"] == ["texts"] and set(classify["properties"]) == {"texts", "groups"}
    assert feedback["required"] == ["id", "label"] and set(feedback["properties"]) == {"id", "label", "reviewer"}
    assert {"415", "422", "500"} <= set(spec["paths"]["/v1/classify"]["post"]["responses"])
