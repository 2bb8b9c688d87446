"""What goes over the wire: the request bodies (checked here, every problem a one-line message) and the
response bodies of the HTTP server (app.py).

Why requests are parsed by hand rather than by pydantic models in the route signature: the body is read
no further than `max_body_bytes` while it streams in (413 before a huge body is held in memory), and each
bad body gets one message a client can act on ({"error": "texts[1] is empty"}), answered 422; FastAPI's
automatic validation would read the whole body first and answer {"detail": [...]}. The bodies are
still described as pydantic models (`ClassifyBody`, `FeedbackBody`: declared in the OpenAPI schema via
`request_body`), and the responses are pydantic models, so /docs and /openapi.json describe both.
"""

import hmac
import json
from dataclasses import dataclass

from fastapi import Request
from pydantic import BaseModel

from hatelens.config import ServeLimits
from hatelens.data import normalize_group
from hatelens.data.labels import normalize_label
from hatelens.data.texts import character_problem, validate_text

JSON = "application/json"
MAX_GROUP_CHARS = 64
MAX_REVIEWER_CHARS = 200


class ApiError(Exception):
    """An HTTP error answered with {"error": message} and counted in /metrics under `kind`."""

    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


# -- responses ----------------------------------------------------------------------------------------


class ClassifyResult(BaseModel):
    id: str  # <request_id>-<position>: what /v1/feedback takes
    label: str | None  # hate | normal; None when a generated answer could not be read
    score: float | None  # P(hate); None in generate mode
    threshold: float | None  # the threshold the score was compared with (per group when calibrated so)
    group: str  # the normalised group ("unknown" when none was given)
    model_version: str
    truncated: bool = False  # the post was cut, its start kept (limits.max_text_tokens, the model's max_length_tokens)


class ClassifyResponse(BaseModel):
    request_id: str
    results: list[ClassifyResult]  # one per text, in request order


class FeedbackResponse(BaseModel):
    id: str
    label: str


class Health(BaseModel):
    status: str  # ready | loading | failed
    model_version: str | None = None  # when ready
    error: str | None = None  # when failed


class ErrorBody(BaseModel):
    error: str


ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 415, 422, 500, 503)}


# -- requests: their schema (OpenAPI only; the parsing below checks them) -------------------------------


class ClassifyBody(BaseModel):
    texts: list[str]  # 1 .. limits.max_texts texts, each non-empty, no control characters
    groups: list[str | None] | None = None  # one target group (or null) per text


class FeedbackBody(BaseModel):
    id: str  # a prediction id that /v1/classify returned
    label: str  # hate | normal
    reviewer: str | None = None


def request_body(model: type[BaseModel]) -> dict:
    """The route's `openapi_extra`: the JSON body it takes, declared in /openapi.json."""
    return {"requestBody": {"required": True, "content": {JSON: {"schema": model.model_json_schema()}}}}


# -- requests -----------------------------------------------------------------------------------------


@dataclass
class ClassifyRequest:
    """{"texts": [...], "groups": [...]?}, with the groups normalised ("unknown" where none was given)."""

    texts: list[str]
    groups: list[str]


@dataclass
class FeedbackRequest:
    """{"id": <a prediction id>, "label": "hate" | "normal" (or a spelling of one), "reviewer": ...?}."""

    id: str
    label: str
    reviewer: str | None


def check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", "auth")


async def read_json(request: Request, max_body_bytes: int) -> object:
    """The body as JSON, read no further than the size limit.

    Only a body declared `Content-Type: application/json`: a web page can post text/plain across origins
    without asking first, and fake feedback would skew the monitor's rates.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != JSON:
        raise ApiError(415, f"send the body as JSON with the header 'Content-Type: {JSON}' "
                            f"(got {media_type[:60] or 'none'!r})", "media_type")
    too_large = ApiError(413, f"request body is larger than {max_body_bytes} bytes; send fewer or shorter texts",
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
        raise ApiError(422, f"body is not valid JSON ({str(error)[:120]})", "invalid") from None


def _invalid(message: str) -> ApiError:
    return ApiError(422, message, "invalid")


def _check_keys(body: object, required: set[str], optional: set[str]) -> dict:
    if not isinstance(body, dict):
        raise _invalid(f"body must be a JSON object with {', '.join(sorted(required))}")
    missing, unknown = required - set(body), set(body) - required - optional
    if missing:
        raise _invalid(f"body lacks {', '.join(sorted(missing))}")
    if unknown:
        raise _invalid(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: "
                       f"{', '.join(sorted(required | optional))}")
    return body


def parse_classify(body: object, limits: ServeLimits) -> ClassifyRequest:
    body = _check_keys(body, {"texts"}, {"groups"})
    texts = body["texts"]
    if not isinstance(texts, list) or not texts:
        raise _invalid("texts must be a non-empty list of strings")
    if len(texts) > limits.max_texts:
        raise _invalid(f"{len(texts)} texts in one request; the limit is {limits.max_texts}: split the request")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _invalid(f"texts[{index}] is {type(text).__name__}, not a string")
        if len(text) > limits.max_text_chars:
            raise _invalid(f"texts[{index}] has {len(text)} characters; the limit is {limits.max_text_chars}:"
                           " shorten it")
        problem = validate_text(text)
        if problem:
            raise _invalid(f"texts[{index}] is empty" if not text.strip() else f"texts[{index}] holds {problem}")
    groups = body.get("groups")
    if groups is None:
        return ClassifyRequest(texts, [normalize_group(None)] * len(texts))
    if not isinstance(groups, list) or len(groups) != len(texts):
        raise _invalid("groups must be a list with one entry (a string or null) per text")
    for index, group in enumerate(groups):
        if group is not None and (not isinstance(group, str) or len(group) > MAX_GROUP_CHARS):
            raise _invalid(f"groups[{index}] must be a string of at most {MAX_GROUP_CHARS} characters or null")
        if group is not None and character_problem(group):
            raise _invalid(f"groups[{index}] holds {character_problem(group)}")
    return ClassifyRequest(texts, [normalize_group(group) for group in groups])


def parse_feedback(body: object) -> FeedbackRequest:
    body = _check_keys(body, {"id", "label"}, {"reviewer"})
    if not isinstance(body["id"], str) or not body["id"] or character_problem(body["id"]):
        raise _invalid("id must be a prediction id that /v1/classify returned")
    label = normalize_label(body["label"]) if isinstance(body["label"], str) else None
    if label is None:
        raise _invalid(f"label {body['label']!r} is not hate or normal")
    reviewer = body.get("reviewer")
    if reviewer is not None and (not isinstance(reviewer, str) or len(reviewer) > MAX_REVIEWER_CHARS
                                 or character_problem(reviewer)):
        raise _invalid(f"reviewer must be a string of at most {MAX_REVIEWER_CHARS} characters, no control characters")
    return FeedbackRequest(body["id"], label, reviewer)
