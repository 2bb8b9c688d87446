"""The classifier behind HTTP: `create_app(...)` -> a FastAPI app (run it with uvicorn).

POST /v1/classify  {"texts": [...], "groups": [...]?} -> per text: id, label, score, threshold, group,
                   model_version, truncated. Each post is cut to `max_text_tokens` up front (posts.py);
                   concurrent requests share forward passes within a token budget, taking turns (batching.py).
POST /v1/feedback  {"id": "<a prediction id>", "label": "hate" | "normal", "reviewer": "..."?}
GET  /healthz      200 once the model is loaded; 503 while it loads or after it failed to load
GET  /metrics      Prometheus text: requests, latency, texts and tokens per batch, predictions by label
                   and group, texts cut, errors

When the variable named by `api_key_env` is set, /v1/* needs "Authorization: Bearer <key>" (401
otherwise; the server warns at start when it is not set). A key in the URL (?api_key=...) is refused
with 400 and query strings never reach the access log. POST bodies must be `Content-Type:
application/json` (415 otherwise). Bad input is answered 413 (body too large) or 422 (a message naming
the text), never 500; a 500 (the model failed on that request alone) never carries internal details.
Every prediction goes to the SQLite prediction log: the text's SHA-256, the text itself only with
log_text=True.

The pieces: `AppState` holds what every request shares (classifier, batcher, log, thresholds, limits,
metrics); the route handlers below are small functions that read it from `request.app.state.hatelens`;
request and response bodies are in schemas.py.
"""

import asyncio
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hatelens.backends.base import Classifier, Output
from hatelens.config import ServeLimits
from hatelens.data import UNKNOWN_GROUP
from hatelens.data.labels import GROUPS
from hatelens.errors import DataError
from hatelens.evaluation.thresholds import Thresholds
from hatelens.serving.batching import BatchTimeout, Job, MicroBatcher
from hatelens.serving.posts import PostMeter
from hatelens.serving.prediction_log import Prediction, PredictionLog, text_sha256
from hatelens.serving.schemas import (
    ERROR_RESPONSES,
    ApiError,
    ClassifyBody,
    ClassifyResponse,
    ClassifyResult,
    FeedbackBody,
    FeedbackResponse,
    Health,
    check_key,
    parse_classify,
    parse_feedback,
    read_json,
    request_body,
)

logger = logging.getLogger(__name__)

ENDPOINTS = ("/v1/classify", "/v1/feedback", "/healthz", "/metrics")
OTHER = "other"
INVALID = "invalid"  # the label of an answer the parser could not read (generate mode)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Query parameters that look like a credential (compared lower-case, "-" as "_"): refused, never logged.
SECRET_PARAMETERS = frozenset({"api_key", "apikey", "key", "token", "access_token", "authorization"})
MAX_ERROR_CHARS = 500


@dataclass
class ServerMetrics:
    """The Prometheus series of one app (own registry, so several apps can live in one process)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_texts: Histogram
    batch_tokens: Histogram
    predictions: Counter
    truncated: Counter
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
            batch_tokens=Histogram("hatelens_batch_tokens", "Post tokens per forward pass",
                                   buckets=BATCH_TOKEN_BUCKETS, registry=registry),
            predictions=Counter("hatelens_predictions", "Predictions by label and group", ["label", "group"],
                                registry=registry),
            truncated=Counter("hatelens_truncated_texts", "Posts cut to max_text_tokens before scoring",
                              registry=registry),
            errors=Counter("hatelens_errors", "Requests answered with an error, by kind", ["kind"],
                           registry=registry),
            model_info=Gauge("hatelens_model_info", "1 for the model version being served", ["model_version"],
                             registry=registry),
        )


@dataclass
class AppState:
    """What every request shares. `classifier` is None until the model is loaded (then /healthz says 200)."""

    thresholds: Thresholds  # how a score becomes a label (evaluation/thresholds.py)
    limits: ServeLimits
    log: PredictionLog
    api_key: str | None  # None: no key needed
    log_text: bool  # store the texts themselves, not only their SHA-256
    named_groups: frozenset[str]  # groups with their own /metrics series; the others count as "other"
    loader: Callable[[], Classifier] | None = None  # builds the classifier after the server starts
    classifier: Classifier | None = None
    posts: PostMeter | None = None  # set with the classifier: cuts and counts posts in its tokens
    load_error: str | None = None  # "<Type>: <message>" when the loader failed
    metrics: ServerMetrics = field(default_factory=ServerMetrics.create)
    batcher: MicroBatcher = field(init=False)

    def __post_init__(self):
        self.batcher = MicroBatcher(self.run_batch, max_batch_texts=self.limits.max_batch_texts,
                                    max_batch_tokens=self.limits.max_batch_tokens,
                                    max_wait_s=self.limits.max_wait_ms / 1000,
                                    batch_timeout_s=self.limits.batch_timeout_s)

    def ready(self, model: Classifier) -> None:
        self.posts = PostMeter.for_model(model, self.limits.max_text_tokens)
        self.classifier = model
        self.metrics.model_info.labels(model.model_version).set(1)
        logger.info("serving %s", model.model_version)

    async def load(self) -> None:
        try:
            self.ready(await asyncio.to_thread(self.loader))
        except Exception as error:  # noqa: BLE001 - reported by /healthz and the log; the server stays up
            self.load_error = f"{type(error).__name__}: {error}"
            logger.error("model failed to load: %s", self.load_error)

    def run_batch(self, jobs: Sequence[Job]) -> list[list[ClassifyResult]]:
        """Worker thread: one classify call for every text of every job, then one log write."""
        model = self.classifier
        texts = [text for job in jobs for text in job.texts]
        groups = [group for job in jobs for group in job.groups]
        self.metrics.batch_texts.observe(len(texts))
        self.metrics.batch_tokens.observe(sum(sum(job.tokens) for job in jobs))
        outputs = model.classify(texts, groups)
        now = datetime.now(timezone.utc)
        per_job, start = [], 0
        for job in jobs:
            job_outputs, start = outputs[start:start + len(job.texts)], start + len(job.texts)
            per_job.append([(self.predict(model, job, index, output, now), output)
                            for index, output in enumerate(job_outputs)])
        self.log.append([prediction for pairs in per_job for prediction, _ in pairs])
        return [[result_of(prediction, output.truncated) for prediction, output in pairs] for pairs in per_job]

    def predict(self, model: Classifier, job: Job, index: int, output: Output, now: datetime) -> Prediction:
        """The prediction for the job's index-th text (the score thresholded for its group), counted in /metrics."""
        text, group, position = job.texts[index], job.groups[index], job.offset + index
        label, threshold = output.answer, None  # generate mode: the parsed answer
        if output.score is not None:
            label, threshold = self.thresholds.decide([output.score], [group])[0], self.thresholds.for_group(group)
        self.metrics.predictions.labels(label or INVALID, group if group in self.named_groups else OTHER).inc()
        return Prediction(id=f"{job.request_id}-{position}", request_id=job.request_id, position=position,
                          created_utc=now, text_sha256=text_sha256(text), text=text if self.log_text else None,
                          group=group, score=output.score, label=label, threshold=threshold,
                          model_version=model.model_version)


def result_of(prediction: Prediction, truncated: bool) -> ClassifyResult:
    return ClassifyResult(id=prediction.id, label=prediction.label, score=prediction.score,
                          threshold=prediction.threshold, group=prediction.group,
                          model_version=prediction.model_version, truncated=truncated)


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
    state = AppState(thresholds=thresholds, limits=limits, log=PredictionLog(db_path),
                     api_key=os.environ.get(api_key_env) or None, log_text=log_text,
                     named_groups=frozenset({*metric_groups, *thresholds.per_group, UNKNOWN_GROUP}),
                     loader=loader, classifier=classifier)
    if state.api_key is None:
        logger.warning("%s is not set: anyone who can reach this server can classify and send feedback; "
                       "set it to require 'Authorization: Bearer <key>'", api_key_env)
    app = FastAPI(title="hatelens", lifespan=lifespan)
    app.state.hatelens = state
    app.middleware("http")(refuse_keys_in_url)
    app.middleware("http")(count_requests)
    app.add_exception_handler(ApiError, answer_error)
    app.include_router(api)
    app.include_router(operations)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    state: AppState = app.state.hatelens
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, HideQueryStrings) for existing in access_log.filters):
        access_log.addFilter(HideQueryStrings())
    state.batcher.start()
    loading = asyncio.create_task(state.load()) if state.loader else None
    if state.classifier is not None:
        state.ready(state.classifier)
    yield
    if loading:
        loading.cancel()
    await state.batcher.stop()


def state_of(request: Request) -> AppState:
    return request.app.state.hatelens


async def count_requests(request: Request, call_next):
    """Middleware: every request counted by endpoint and status, and timed."""
    metrics = state_of(request).metrics
    started = time.perf_counter()
    response = await call_next(request)
    endpoint = request.url.path if request.url.path in ENDPOINTS else OTHER
    metrics.requests.labels(endpoint, str(response.status_code)).inc()
    metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    return response


async def refuse_keys_in_url(request: Request, call_next):
    """Middleware (outermost): a credential in the query string is refused before anything else runs."""
    names = {name.lower().replace("-", "_") for name in request.query_params}
    if names & SECRET_PARAMETERS:
        state_of(request).metrics.errors.labels("key_in_url").inc()
        return JSONResponse({"error": "do not put the API key in the URL (URLs land in logs and browser history); "
                                      "send the header 'Authorization: Bearer <key>'"}, status_code=400)
    return await call_next(request)


class HideQueryStrings(logging.Filter):
    """uvicorn's access log lines with the path only: a query string may hold a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):  # (client, method, path, ...)
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


async def answer_error(request: Request, error: ApiError) -> JSONResponse:
    state_of(request).metrics.errors.labels(error.kind).inc()
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    message = error.message[:MAX_ERROR_CHARS].encode("utf-8", "backslashreplace").decode()  # echoes stay valid
    return JSONResponse({"error": message}, status_code=error.status, headers=headers)


def require_api_key(request: Request) -> None:
    check_key(request, state_of(request).api_key)


# -- routes: /v1/* (the API, behind the key when one is set) and the operator's endpoints ---------------
api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
operations = APIRouter()


@api.post("/classify", response_model=ClassifyResponse, openapi_extra=request_body(ClassifyBody))
async def classify(request: Request):
    state = state_of(request)
    body = parse_classify(await read_json(request, state.limits.max_body_bytes), state.limits)
    if state.classifier is None:
        raise ApiError(503, "the model is still loading; retry when /healthz says ready", "not_ready")
    request_id = uuid.uuid4().hex
    posts = await asyncio.to_thread(state.posts.measure, body.texts)  # a tokenizer call: off the event loop
    state.metrics.truncated.inc(sum(posts.cut))
    try:
        results = await state.batcher.submit(posts.texts, body.groups, posts.tokens, request_id)
    except BatchTimeout:
        raise ApiError(503, f"the model took longer than {state.limits.batch_timeout_s} s; retry later "
                            "or send fewer or shorter texts", "timeout") from None
    except Exception:  # noqa: BLE001 - the model failed on this request (logged with its traceback): keep serving
        raise ApiError(500, f"the model failed on this request (request id {request_id}); "
                            "the server log has the details", "model") from None
    for result, cut in zip(results, posts.cut):
        result.truncated = result.truncated or cut
    response = ClassifyResponse(request_id=request_id, results=results)
    return JSONResponse(response.model_dump(), headers={"X-Request-ID": request_id})


@api.post("/feedback", response_model=FeedbackResponse, openapi_extra=request_body(FeedbackBody))
async def feedback(request: Request):
    state = state_of(request)
    body = parse_feedback(await read_json(request, state.limits.max_body_bytes))
    try:
        await asyncio.to_thread(state.log.add_feedback, body.id, body.label, reviewer=body.reviewer)
    except DataError as error:
        raise ApiError(404, str(error), "unknown_prediction") from None
    return FeedbackResponse(id=body.id, label=body.label)


@operations.get("/healthz", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}})
async def healthz(request: Request):
    state = state_of(request)
    if state.classifier is not None:
        return Health(status="ready", model_version=state.classifier.model_version)
    unhealthy = Health(status="failed", error=state.load_error) if state.load_error else Health(status="loading")
    return JSONResponse(unhealthy.model_dump(exclude_none=True), status_code=503)


@operations.get("/metrics")
async def prometheus_metrics(request: Request):
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
