"""The classifier behind HTTP: `create_app(...)` -> a FastAPI app (run it with uvicorn).

POST /v1/classify  {"texts": [...], "groups": [...]?} -> per text: id, label, score, threshold, group,
                   model_version. Concurrent requests share forward passes (see batching.py).
POST /v1/feedback  {"id": "<a prediction id>", "label": "hate" | "normal", "reviewer": "..."?}
GET  /healthz      200 once the model is loaded; 503 while it loads or after it failed to load
GET  /metrics      Prometheus text: requests, latency, texts per batch, predictions by label and
                   group, errors

When the variable named by `api_key_env` is set, /v1/* needs "Authorization: Bearer <key>" (401
otherwise). Bad input is answered 413 (body too large) or 422 (with a message), never 500.
Every prediction goes to the SQLite prediction log: the text's SHA-256, the text itself only with
log_text=True.
"""

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hatelens.backends.base import Classifier
from hatelens.config import ServeLimits
from hatelens.data import UNKNOWN_GROUP, normalize_group
from hatelens.data.labels import GROUPS, normalize_label
from hatelens.errors import DataError
from hatelens.evaluation.thresholds import Thresholds
from hatelens.serving.batching import Job, MicroBatcher
from hatelens.serving.prediction_log import Prediction, PredictionLog, text_sha256

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/classify", "/v1/feedback", "/healthz", "/metrics")
OTHER = "other"
INVALID = "invalid"  # the label of an answer the parser could not read (generate mode)
MAX_GROUP_CHARS = 64
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class BadRequest(Exception):
    """An HTTP error answered with {"error": message}."""

    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class ServerMetrics:
    """The Prometheus series of one app (own registry, so several apps can live in one process)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_texts: Histogram
    predictions: Counter
    errors: Counter
    model_info: Gauge

    @classmethod
    def create(cls) -> "ServerMetrics":
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("hatelens_requests", "HTTP requests", ["endpoint", "status"], registry=registry),
            latency=Histogram("hatelens_request_latency_seconds", "Time from request to response",
                              ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=registry),
            batch_texts=Histogram("hatelens_batch_texts", "Texts per forward pass", buckets=BATCH_BUCKETS,
                                  registry=registry),
            predictions=Counter("hatelens_predictions", "Predictions by label and group", ["label", "group"],
                                registry=registry),
            errors=Counter("hatelens_errors", "Requests answered with an error, by kind", ["kind"],
                           registry=registry),
            model_info=Gauge("hatelens_model_info", "1 for the model version being served", ["model_version"],
                             registry=registry),
        )


def create_app(classifier: Classifier | None = None, *, loader: Callable[[], Classifier] | None = None,
               thresholds: Thresholds, db_path: str, api_key_env: str = "HATELENS_API_KEY",
               limits: ServeLimits = ServeLimits(), log_text: bool = False,
               metric_groups: Sequence[str] = GROUPS) -> FastAPI:
    """The app. Give a loaded `classifier`, or a `loader` that builds one after the server starts
    (then /healthz says 503 until it is ready).

    thresholds: how a score becomes a label (thresholds.load_thresholds reads a calibrate file).
    """
    if (classifier is None) == (loader is None):
        raise ValueError("give exactly one of classifier and loader")
    prediction_log = PredictionLog(db_path)
    metrics = ServerMetrics.create()
    named_groups = {*metric_groups, *thresholds.per_group, UNKNOWN_GROUP}
    api_key = os.environ.get(api_key_env) or None
    state = {"classifier": classifier, "load_error": None}

    def run_batch(jobs: Sequence[Job]) -> list[list[dict]]:
        """Worker thread: one classify call for every text of every job, then one log write."""
        model = state["classifier"]
        texts = [text for job in jobs for text in job.texts]
        groups = [group for job in jobs for group in job.groups]
        metrics.batch_texts.observe(len(texts))
        outputs = iter(model.classify(texts, groups))
        now = datetime.now(timezone.utc)
        results, logged = [], []
        for job in jobs:
            answers = []
            for position, (text, group) in enumerate(zip(job.texts, job.groups)):
                output = next(outputs)
                label, threshold = output.answer, None  # generate mode: the parsed answer
                if output.score is not None:
                    label, threshold = thresholds.decide([output.score], [group])[0], thresholds.for_group(group)
                prediction = Prediction(
                    id=f"{job.request_id}-{position}", request_id=job.request_id, position=position,
                    created_utc=now, text_sha256=text_sha256(text), text=text if log_text else None, group=group,
                    score=output.score, label=label, threshold=threshold, model_version=model.model_version)
                logged.append(prediction)
                answers.append({"id": prediction.id, "label": label, "score": output.score, "threshold": threshold,
                                "group": group, "model_version": model.model_version})
                metrics.predictions.labels(label or INVALID, group if group in named_groups else OTHER).inc()
            results.append(answers)
        prediction_log.append(logged)
        return results

    batcher = MicroBatcher(run_batch, max_batch_texts=limits.max_batch_texts, max_wait_s=limits.max_wait_ms / 1000)

    def ready(model: Classifier) -> None:
        state["classifier"] = model
        metrics.model_info.labels(model.model_version).set(1)
        logger.info("serving %s", model.model_version)

    async def load_in_background() -> None:
        try:
            ready(await asyncio.to_thread(loader))
        except Exception as error:  # noqa: BLE001 - reported by /healthz and the log; the server stays up
            state["load_error"] = f"{type(error).__name__}: {error}"
            logger.error("model failed to load: %s", state["load_error"])

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        loading = asyncio.create_task(load_in_background()) if loader else None
        if classifier is not None:
            ready(classifier)
        yield
        if loading:
            loading.cancel()
        await batcher.stop()

    app = FastAPI(title="hatelens", lifespan=lifespan)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        endpoint = request.url.path if request.url.path in ENDPOINTS else OTHER
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def failure(error: BadRequest) -> JSONResponse:
        metrics.errors.labels(error.kind).inc()
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.post("/v1/classify")
    async def classify(request: Request):
        try:
            check_key(request, api_key)
            texts, groups = parse_classify(await read_json(request, limits.max_body_bytes), limits)
            if state["classifier"] is None:
                raise BadRequest(503, "the model is still loading; retry when /healthz says ready", "not_ready")
        except BadRequest as error:
            return failure(error)
        request_id = uuid.uuid4().hex
        try:
            results = await batcher.submit(texts, groups, request_id)
        except Exception as error:  # noqa: BLE001 - the model failed on a valid request: say so, keep serving
            metrics.errors.labels("model").inc()
            return JSONResponse({"error": f"the model failed: {type(error).__name__}: {error}"}, status_code=500)
        return JSONResponse({"request_id": request_id, "results": results}, headers={"X-Request-ID": request_id})

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        try:
            check_key(request, api_key)
            prediction_id, label, reviewer = parse_feedback(await read_json(request, limits.max_body_bytes))
            try:
                await asyncio.to_thread(prediction_log.add_feedback, prediction_id, label, reviewer=reviewer)
            except DataError as error:
                raise BadRequest(404, str(error), "unknown_prediction") from None
        except BadRequest as error:
            return failure(error)
        return {"id": prediction_id, "label": label}

    @app.get("/healthz")
    async def healthz():
        if state["classifier"] is not None:
            return {"status": "ready", "model_version": state["classifier"].model_version}
        if state["load_error"]:
            return JSONResponse({"status": "failed", "error": state["load_error"]}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# -- request checks: every bad body is a BadRequest with a message, never an exception that escapes --


def check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise BadRequest(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", "auth")


async def read_json(request: Request, max_body_bytes: int) -> object:
    """The body as JSON, read no further than the size limit."""
    too_large = BadRequest(413, f"request body is larger than {max_body_bytes} bytes; send fewer or shorter texts",
                           "too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise too_large
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise BadRequest(422, f"body is not valid JSON ({str(error)[:120]})", "invalid") from None


def _check_keys(body: object, required: set[str], optional: set[str]) -> dict:
    if not isinstance(body, dict):
        raise BadRequest(422, f"body must be a JSON object with {', '.join(sorted(required))}", "invalid")
    missing, unknown = required - set(body), set(body) - required - optional
    if missing:
        raise BadRequest(422, f"body lacks {', '.join(sorted(missing))}", "invalid")
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(sorted(unknown))}; allowed: "
                              f"{', '.join(sorted(required | optional))}", "invalid")
    return body


def parse_classify(body: object, limits: ServeLimits) -> tuple[list[str], list[str]]:
    """(texts, normalised groups) from {"texts": [...], "groups": [...]?}."""
    body = _check_keys(body, {"texts"}, {"groups"})
    texts = body["texts"]
    if not isinstance(texts, list) or not texts:
        raise BadRequest(422, "texts must be a non-empty list of strings", "invalid")
    if len(texts) > limits.max_texts:
        raise BadRequest(422, f"{len(texts)} texts in one request; the limit is {limits.max_texts}: split the request",
                         "invalid")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(422, f"texts[{index}] is {type(text).__name__}, not a string", "invalid")
        if not text.strip():
            raise BadRequest(422, f"texts[{index}] is empty", "invalid")
        if len(text) > limits.max_text_chars:
            raise BadRequest(422, f"texts[{index}] has {len(text)} characters; the limit is {limits.max_text_chars}",
                             "invalid")
    groups = body.get("groups")
    if groups is None:
        return texts, [normalize_group(None)] * len(texts)
    if not isinstance(groups, list) or len(groups) != len(texts):
        raise BadRequest(422, "groups must be a list with one entry (a string or null) per text", "invalid")
    for index, group in enumerate(groups):
        if group is not None and (not isinstance(group, str) or len(group) > MAX_GROUP_CHARS):
            raise BadRequest(422, f"groups[{index}] must be a string of at most {MAX_GROUP_CHARS} characters or null",
                             "invalid")
    return texts, [normalize_group(group) for group in groups]


def parse_feedback(body: object) -> tuple[str, str, str | None]:
    """(prediction id, "hate"/"normal", reviewer) from {"id", "label", "reviewer"?}."""
    body = _check_keys(body, {"id", "label"}, {"reviewer"})
    if not isinstance(body["id"], str) or not body["id"]:
        raise BadRequest(422, "id must be a prediction id that /v1/classify returned", "invalid")
    label = normalize_label(body["label"]) if isinstance(body["label"], str) else None
    if label is None:
        raise BadRequest(422, f"label {body['label']!r} is not hate or normal", "invalid")
    reviewer = body.get("reviewer")
    if reviewer is not None and (not isinstance(reviewer, str) or len(reviewer) > 200):
        raise BadRequest(422, "reviewer must be a string of at most 200 characters", "invalid")
    return body["id"], label, reviewer
