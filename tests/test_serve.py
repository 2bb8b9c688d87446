"""The HTTP server, for real: uvicorn on a loopback port, a tiny random Llama behind it, a SQLite log."""

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fixtures import SERVE_THRESHOLDS, serve_app, serving
from prometheus_client.parser import text_string_to_metric_families

from hatelens.config import ServeLimits
from hatelens.serving.app import create_app
from hatelens.serving.prediction_log import PredictionLog

THRESHOLDS = SERVE_THRESHOLDS
TEXTS = ["first post", "a second, longer post about people", "third"]


def _metrics(url: str) -> dict:
    """{(name, sorted label items): value} from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_classify_returns_label_score_threshold_and_version_per_text(classifier, db_path):
    expected = [output.score for output in classifier.classify(TEXTS)]
    with serving(serve_app(classifier, db_path)) as url:
        response = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS, "groups": ["LGBTQ+", "mexican", None]})
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [result["score"] for result in results] == pytest.approx(expected, abs=1e-5)
    assert [result["group"] for result in results] == ["lgbtq", "mexican", "unknown"]
    assert [result["threshold"] for result in results] == [0.25, 0.5, 0.5]
    for result in results:
        assert result["label"] == ("hate" if result["score"] >= result["threshold"] else "normal")
        assert result["model_version"] == "tiny-llama"
    assert [result["id"] for result in results] == [f"{body['request_id']}-{i}" for i in range(3)]
    assert response.headers["x-request-id"] == body["request_id"]


def test_concurrent_requests_share_bounded_batches(classifier, db_path):
    texts = [f"post number {i}" for i in range(12)]
    expected = {text: output.score for text, output in zip(texts, classifier.classify(texts))}
    limits = ServeLimits(max_batch_texts=4, max_wait_ms=300)
    with serving(serve_app(classifier, db_path, limits=limits)) as url:
        with httpx.Client() as client, ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda text: client.post(f"{url}/v1/classify", json={"texts": [text]}), texts))
        metrics = _metrics(url)
    assert [response.status_code for response in responses] == [200] * 12
    for text, response in zip(texts, responses):
        assert response.json()["results"][0]["score"] == pytest.approx(expected[text], abs=1e-5)
    batches = metrics[("hatelens_batch_texts_count", ())]
    assert metrics[("hatelens_batch_texts_sum", ())] == 12
    assert batches < 12  # requests were merged ...
    assert metrics[("hatelens_batch_texts_bucket", (("le", "4.0"),))] == batches  # ... never past the bound
    assert batches >= 3


def test_a_request_larger_than_the_batch_bounds_is_served_in_pieces_in_order(classifier, db_path):
    expected = [output.score for output in classifier.classify(TEXTS)]
    limits = ServeLimits(max_batch_texts=2, max_wait_ms=1)
    with serving(serve_app(classifier, db_path, limits=limits)) as url:
        response = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS})
        metrics = _metrics(url)
    body = response.json()
    assert response.status_code == 200
    assert [result["score"] for result in body["results"]] == pytest.approx(expected, abs=1e-5)
    assert [result["id"] for result in body["results"]] == [f"{body['request_id']}-{i}" for i in range(3)]
    assert metrics[("hatelens_batch_texts_count", ())] == 2  # 2 + 1 texts
    limits = ServeLimits(max_batch_tokens=40, max_wait_ms=1)
    with serving(serve_app(classifier, db_path, limits=limits)) as url:
        by_tokens = httpx.post(f"{url}/v1/classify", json={"texts": ["x" * 30, "y" * 30]})
        metrics = _metrics(url)
    assert by_tokens.status_code == 200 and len(by_tokens.json()["results"]) == 2
    assert metrics[("hatelens_batch_texts_count", ())] == 2  # 60 tokens over a 40-token budget (a token a character)


def test_api_key_is_required_when_set(classifier, db_path, monkeypatch):
    monkeypatch.setenv("HATELENS_TEST_KEY", "s3cret")
    body = {"texts": ["a post"]}
    with serving(serve_app(classifier, db_path, api_key_env="HATELENS_TEST_KEY")) as url:
        missing = httpx.post(f"{url}/v1/classify", json=body)
        wrong = httpx.post(f"{url}/v1/classify", json=body, headers={"Authorization": "Bearer nope"})
        basic = httpx.post(f"{url}/v1/classify", json=body, headers={"Authorization": "Basic s3cret"})
        feedback = httpx.post(f"{url}/v1/feedback", json={"id": "x", "label": "hate"})
        right = httpx.post(f"{url}/v1/classify", json=body, headers={"Authorization": "Bearer s3cret"})
        health = httpx.get(f"{url}/healthz")
        metrics = _metrics(url)
    assert [r.status_code for r in (missing, wrong, basic, feedback)] == [401] * 4
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    assert right.status_code == 200 and health.status_code == 200
    assert metrics[("hatelens_errors_total", (("kind", "auth"),))] == 4


LIMITS = ServeLimits(max_body_bytes=200_000, max_texts=4, max_text_chars=500)
BAD_BODIES = {
    "not json": (b"{texts: [", 422, "not valid JSON"),
    "bad utf-8": (b'{"texts": ["\xff\xfe"]}', 422, "not valid JSON"),
    "deeply nested": (b"[" * 100_000, 422, "not valid JSON"),
    "a list": (b'["a"]', 422, "must be a JSON object"),
    "no texts": (b'{"groups": []}', 422, "lacks texts"),
    "texts not a list": (b'{"texts": "a post"}', 422, "non-empty list"),
    "no text": (b'{"texts": []}', 422, "non-empty list"),
    "empty text": (b'{"texts": ["ok", "  "]}', 422, "texts[1] is empty"),
    "number": (b'{"texts": ["ok", 5]}', 422, "texts[1] is int"),
    "null text": (b'{"texts": [null]}', 422, "texts[0] is NoneType"),
    "too many": (json.dumps({"texts": ["a"] * 5}).encode(), 422, "5 texts in one request; the limit is 4"),
    "too long": (json.dumps({"texts": ["a" * 501]}).encode(), 422, "texts[0] has 501 characters"),
    "groups short": (b'{"texts": ["a", "b"], "groups": ["lgbtq"]}', 422, "one entry"),
    "group not str": (b'{"texts": ["a"], "groups": [3]}', 422, "groups[0]"),
    "unknown field": (b'{"texts": ["a"], "text": "a"}', 422, "unknown field(s) text"),
    "lone surrogate": (b'{"texts": ["ok", "\\ud800"]}', 422, "texts[1] holds a lone surrogate U+D800 at character 1"),
    "control character": (b'{"texts": ["a\\u0007b"]}', 422, "texts[0] holds a control character U+0007"),
    "surrogate group": (b'{"texts": ["a"], "groups": ["\\udfff"]}', 422, "groups[0] holds a lone surrogate"),
    "surrogate field name": (b'{"texts": ["a"], "\\ud800": 1}', 422, "unknown field(s) \\ud800"),
    "too large": (json.dumps({"texts": ["a" * 300_000]}).encode(), 413, "larger than 200000 bytes"),
}


def test_every_bad_input_gets_a_message_never_a_500(classifier, db_path):
    with serving(serve_app(classifier, db_path, limits=LIMITS)) as url:
        answers = {name: httpx.post(f"{url}/v1/classify", content=body, headers={"content-type": "application/json"})
                   for name, (body, _, _) in BAD_BODIES.items()}

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(30):
                yield b" " * 10_000

        streamed = httpx.post(f"{url}/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        after = httpx.post(f"{url}/v1/classify", json={"texts": ["still serving"]})
        metrics = _metrics(url)
    for name, (_, status, message) in BAD_BODIES.items():
        assert answers[name].status_code == status, name
        assert message in answers[name].json()["error"], name
    assert streamed.status_code == 413
    assert after.status_code == 200
    assert not any(name == "hatelens_requests_total" and dict(labels)["status"].startswith("5")
                   for name, labels in metrics)
    assert PredictionLog(db_path).read()[0].request_id == after.json()["request_id"]  # nothing bad was logged


def test_metrics_count_requests_predictions_and_errors(classifier, db_path):
    with serving(serve_app(classifier, db_path)) as url:
        httpx.post(f"{url}/v1/classify", json={"texts": TEXTS, "groups": ["lgbtq", "klingon", None]})
        httpx.post(f"{url}/v1/classify", json={"texts": []})
        metrics = _metrics(url)
    assert metrics[("hatelens_requests_total", (("endpoint", "/v1/classify"), ("status", "200")))] == 1
    assert metrics[("hatelens_requests_total", (("endpoint", "/v1/classify"), ("status", "422")))] == 1
    assert metrics[("hatelens_request_latency_seconds_count", (("endpoint", "/v1/classify"),))] == 2
    assert metrics[("hatelens_errors_total", (("kind", "invalid"),))] == 1
    assert metrics[("hatelens_model_info", (("model_version", "tiny-llama"),))] == 1
    by_group = {}
    for (name, labels), value in metrics.items():
        if name == "hatelens_predictions_total":
            by_group[dict(labels)["group"]] = by_group.get(dict(labels)["group"], 0) + value
    assert by_group == {"lgbtq": 1, "other": 1, "unknown": 1}  # unlisted groups never become new series


def test_feedback_round_trip(classifier, db_path):
    with serving(serve_app(classifier, db_path)) as url:
        results = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS}).json()["results"]
        accepted = httpx.post(f"{url}/v1/feedback", json={"id": results[1]["id"], "label": "hateful",
                                                          "reviewer": "moderator-7"})
        unknown = httpx.post(f"{url}/v1/feedback", json={"id": "no-such-id", "label": "hate"})
        bad_label = httpx.post(f"{url}/v1/feedback", json={"id": results[0]["id"], "label": "maybe"})
    assert accepted.status_code == 200 and accepted.json() == {"id": results[1]["id"], "label": "hate"}
    assert unknown.status_code == 404 and "no logged prediction" in unknown.json()["error"]
    assert bad_label.status_code == 422 and "'maybe' is not hate or normal" in bad_label.json()["error"]
    logged = {row.id: row for row in PredictionLog(db_path).read()}
    assert logged[results[1]["id"]].true_label == "hate"
    assert logged[results[0]["id"]].true_label is None


@pytest.mark.parametrize("log_text", [False, True])
def test_prediction_log_holds_every_prediction(classifier, db_path, log_text):
    with serving(serve_app(classifier, db_path, log_text=log_text)) as url:
        body = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS, "groups": ["lgbtq", "mexican", "lgbtq"]}).json()
    rows = PredictionLog(db_path).read()
    assert [row.id for row in sorted(rows, key=lambda row: row.position)] == [r["id"] for r in body["results"]]
    for row, result, text in zip(sorted(rows, key=lambda row: row.position), body["results"], TEXTS):
        assert row.request_id == body["request_id"]
        assert row.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
        assert row.text == (text if log_text else None)
        assert (row.group, row.label, row.threshold, row.model_version) == \
            (result["group"], result["label"], result["threshold"], "tiny-llama")
        assert row.score == pytest.approx(result["score"])


def test_healthz_waits_for_the_model_and_reports_a_failed_load(classifier, db_path, tmp_path):
    loaded = threading.Event()

    def slow_loader():
        loaded.wait(timeout=20)
        return classifier

    with serving(create_app(loader=slow_loader, thresholds=THRESHOLDS, db_path=str(db_path))) as url:
        loading = httpx.get(f"{url}/healthz")
        early = httpx.post(f"{url}/v1/classify", json={"texts": ["a"]})
        loaded.set()
        for _ in range(200):
            ready = httpx.get(f"{url}/healthz")
            if ready.status_code == 200:
                break
            threading.Event().wait(0.05)
    assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
    assert early.status_code == 503 and "still loading" in early.json()["error"]
    assert ready.json() == {"status": "ready", "model_version": "tiny-llama"}

    def broken_loader():
        raise OSError("weights missing")

    with serving(create_app(loader=broken_loader, thresholds=THRESHOLDS, db_path=str(tmp_path / "b.sqlite"))) as url:
        for _ in range(200):
            failed = httpx.get(f"{url}/healthz")
            if failed.json()["status"] != "loading":
                break
            threading.Event().wait(0.05)
    assert failed.status_code == 503
    assert failed.json() == {"status": "failed", "error": "OSError: weights missing"}


class FailsOnBoom:
    """A classifier wrapper whose model breaks on one input: the server must answer 500 and go on."""

    def __init__(self, inner):
        self.inner, self.model_version, self.mode = inner, inner.model_version, inner.mode

    def classify(self, texts, groups=None):
        if "boom" in texts:
            raise RuntimeError("tensor shapes do not match")
        return self.inner.classify(texts, groups)


def test_a_model_failure_is_reported_and_the_server_keeps_serving(classifier, db_path):
    with serving(serve_app(FailsOnBoom(classifier), db_path)) as url:
        failed = httpx.post(f"{url}/v1/classify", json={"texts": ["boom"]})
        after = httpx.post(f"{url}/v1/classify", json={"texts": ["fine"]})
    assert failed.status_code == 500
    assert re.fullmatch(r"the model failed on this request \(request id [0-9a-f]{32}\); "
                        "the server log has the details", failed.json()["error"])  # nothing internal
    assert after.status_code == 200


def test_a_failing_request_does_not_fail_the_others_in_its_batch(classifier, db_path):
    texts = ["boom"] + [f"post number {i}" for i in range(7)]
    limits = ServeLimits(max_batch_texts=8, max_wait_ms=500)
    with serving(serve_app(FailsOnBoom(classifier), db_path, limits=limits)) as url:
        with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda text: client.post(f"{url}/v1/classify", json={"texts": [text]}), texts))
        metrics = _metrics(url)
    assert [response.status_code for response in responses] == [500] + [200] * 7
    assert metrics[("hatelens_batch_texts_sum", ())] > 8  # "boom" shared a batch that failed and ran again
    assert len(PredictionLog(db_path).read()) == 7


@pytest.mark.slow
def test_the_serve_command_starts_loads_and_answers(tiny_llama_dir, tmp_path):
    """`hatelens serve` as a user starts it: its own process, /healthz 503 then 200, the log on disk."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "served.sqlite"
    process = subprocess.Popen([sys.executable, "-m", "hatelens", "serve", "--model", str(tiny_llama_dir),
                                "--port", str(port), "--db", str(db), "--device", "cpu", "--log-text",
                                "limits.max_texts=2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        statuses = set()
        deadline = time.monotonic() + 120
        while 200 not in statuses:
            assert process.poll() is None and time.monotonic() < deadline
            try:
                statuses.add(httpx.get(f"{url}/healthz", timeout=2).status_code)
            except httpx.TransportError:
                time.sleep(0.2)
        too_many = httpx.post(f"{url}/v1/classify", json={"texts": ["a", "b", "c"]})
        answered = httpx.post(f"{url}/v1/classify", json={"texts": ["a post"]})
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert too_many.status_code == 422 and "the limit is 2" in too_many.json()["error"]
    assert answered.status_code == 200
    assert [row.text for row in PredictionLog(db).read()] == ["a post"]
