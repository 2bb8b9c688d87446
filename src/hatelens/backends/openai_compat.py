"""Any `/v1/chat/completions` server (vLLM, llama.cpp, Azure AI Foundry, OpenAI) as a classifier.

The template's chat messages are sent as they are; the server applies its own chat template.
- score mode asks for `logprobs` with the top 20 alternatives per token. At the answer's first token
  (the first content token that is more than whitespace or punctuation), every alternative that
  spells the start of a label word ("hate", " Hate", "h" for hate; "normal", " norm" for normal)
  adds its probability to that label; score = P(hate) / (P(hate) + P(normal)). A label with no
  alternative listed gets the smallest listed probability: an upper bound, so such a score leans
  toward uncertainty, never past what the server showed. When neither label is listed, the row has
  no score and its prediction is the parsed text (counted and logged as a warning).
  A server that returns no logprobs at all is an error: use --mode generate there.
- generate mode parses the answer with `parsing.parse_answer` (invalid when unclear, never guessed).

Requests run `max_concurrency` at a time; 429, 5xx, timeouts and dropped connections are retried
with exponential backoff (honouring Retry-After); other errors stop the run with the server's
message. Every successful response is cached on disk as JSON, keyed by the SHA-256 of the URL and
request body, so running the same evaluation again sends nothing. The API key is read from the
environment variable named by `api_key_env`; without it no Authorization header is sent (a local
server needs none).

Azure OpenAI (classic resource endpoints) is the same API behind another address: the key goes in
an `api-key` header, the path names a deployment (/openai/deployments/<deployment>/chat/completions)
and every request carries `?api-version=`. It is on when `api_version` is set or the URL has an
api-version query; the deployment comes from `deployment`, the URL's path, or else the model name.
The key then defaults to AZURE_OPENAI_API_KEY.
"""

import hashlib
import json
import logging
import math
import os
import random
import string
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from hatelens import runs
from hatelens.backends import adapters, models, prompts
from hatelens.backends.base import Output
from hatelens.backends.parsing import parse_answer
from hatelens.data.labels import HATE, NORMAL
from hatelens.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # the most OpenAI accepts; vLLM and llama.cpp accept it too
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0
_NOT_WORD = string.whitespace + string.punctuation + "“”‘’"


class OpenAICompatClassifier:
    """Classify texts through a chat-completions endpoint. `base_url` ends where /chat/completions begins
    (for example http://127.0.0.1:8000/v1)."""

    def __init__(self, base_url: str, model: str, template: prompts.PromptTemplate, *, mode: str = "score",
                 api_key: str | None = None, max_concurrency: int = 8, timeout_s: float = 60.0,
                 max_retries: int = 5, max_new_tokens: int = 16, reasoning_effort: str | None = None,
                 cache_dir: str | Path | None = None, backoff_s: float = 1.0, api_version: str | None = None,
                 deployment: str | None = None):
        if mode not in ("score", "generate"):
            raise ConfigError(f"unknown mode {mode!r}; choose score or generate")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.url, self._headers = chat_endpoint(base_url, api_key=api_key, api_version=api_version,
                                                deployment=deployment or model)
        self.model = model
        self.template = template
        self.mode = mode
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.reasoning_effort = reasoning_effort
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.backoff_s = backoff_s
        self.model_version = f"{model}@{base_url.rstrip('/')}"
        # (label, word): the label words, then any fine answers' (counted toward their label)
        self._label_prefixes = [(label, word.strip().lower()) for label, word in template.label_words.items()] + [
            (label, word.strip().lower()) for word, label in template.fine_words.items()]

    # -- public ---------------------------------------------------------------------------------
    def classify(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> list[Output]:
        """One Output per text, in order; up to max_concurrency requests in flight."""
        workers = min(self.max_concurrency, max(1, len(texts)))
        # one connection pool per call: closed when the call ends, so nothing is left open between calls
        with httpx.Client(timeout=self.timeout_s, limits=httpx.Limits(max_connections=workers)) as client, \
                ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self._classify_one, client, text) for text in texts]
            try:
                outputs = [future.result() for future in futures]
            except BaseException:
                pool.shutdown(cancel_futures=True)  # one request failed for good: send no more
                raise
        unscored = sum(output.score is None for output in outputs) if self.mode == "score" else 0
        if unscored:
            logger.warning("%d of %d answers listed neither label word among the top %d log-probabilities; "
                           "their predictions come from the parsed text", unscored, len(texts), TOP_LOGPROBS)
        return outputs

    def request_body(self, text: str) -> dict:
        body = {"model": self.model, "messages": self.template.messages(text), "temperature": 0,
                "max_tokens": self.max_new_tokens}
        if self.mode == "score":
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        if self.reasoning_effort:
            body["reasoning_effort"] = self.reasoning_effort
        return body

    # -- one text -------------------------------------------------------------------------------
    def _classify_one(self, client: httpx.Client, text: str) -> Output:
        response = self._cached_post(client, self.request_body(text))
        try:
            choice = response["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelError(f"{self.url} answered without choices[0].message; is it a chat-completions "
                             f"endpoint? (got {json.dumps(response)[:200]})") from None
        answer = parse_answer(content, self.template.label_words, self.template.fine_words)
        if self.mode == "generate":
            return Output(answer=answer, raw=content)
        try:
            score = self.label_score(choice.get("logprobs"))
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{self.url} returned logprobs in an unexpected shape: "
                             f"{json.dumps(choice.get('logprobs'))[:200]}; use --mode generate") from None
        return Output(score=score, answer=answer if score is None else None, raw=content)

    def label_score(self, logprobs: dict | None) -> float | None:
        """P(hate) from the alternatives at the answer's first token (see the module docstring)."""
        if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
            raise ModelError(f"{self.url} returned no logprobs for model {self.model}; this server cannot "
                             "score: use --mode generate")
        # an empty list: the reply had no content tokens (a reasoning model that ran out of max_tokens)
        first = next((token for token in logprobs["content"] if token["token"].strip(_NOT_WORD)), None)
        if first is None or not first.get("top_logprobs"):
            return None
        mass = {HATE: 0.0, NORMAL: 0.0}
        for alternative in first["top_logprobs"]:
            label = self._label_of(alternative["token"])
            if label:
                mass[label] += math.exp(alternative["logprob"])
        if mass[HATE] == 0.0 and mass[NORMAL] == 0.0:
            return None
        floor = min(math.exp(alternative["logprob"]) for alternative in first["top_logprobs"])
        hate, normal = mass[HATE] or floor, mass[NORMAL] or floor
        return hate / (hate + normal)

    def _label_of(self, token: str) -> str | None:
        """The label whose words (one or more) this token begins, if exactly one label's do."""
        piece = token.strip(_NOT_WORD).lower()
        if not piece:
            return None
        matches = {label for label, word in self._label_prefixes if word.startswith(piece)}
        return matches.pop() if len(matches) == 1 else None

    # -- HTTP -----------------------------------------------------------------------------------
    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps({"url": self.url, "body": body}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached_post(self, client: httpx.Client, body: dict) -> dict:
        path = self._cache_path(body)
        if path is not None and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["response"]
        response = self._post(client, body)
        if path is not None:
            runs.write_json(path, {"url": self.url, "request": body, "response": response})
        return response

    def _post(self, client: httpx.Client, body: dict) -> dict:
        """The response JSON, after retries; ModelError with the reason when it cannot be had."""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = client.post(self.url, json=body, headers=self._headers)
            except httpx.TimeoutException:
                reason = f"no answer within {self.timeout_s:g} s (raise timeout_s or lower --max-concurrency)"
            except httpx.TransportError as error:
                reason = f"connection failed ({type(error).__name__}: {error}); is the server running?"
            else:
                if response.status_code == 200:
                    return self._json(response)
                if response.status_code not in RETRY_STATUSES:
                    raise ModelError(self._refusal(response))
                reason = f"HTTP {response.status_code}: {_server_message(response)}"
                retry_after = _retry_after_s(response)
            if attempt == self.max_retries:
                raise ModelError(f"{self.url}: {reason}; gave up after {attempt + 1} tries (max_retries={self.max_retries})")
            delay = retry_after if retry_after is not None else \
                min(MAX_BACKOFF_S, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
            logger.info("%s: %s; retry %d of %d in %.1f s", self.url, reason, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _json(self, response: httpx.Response) -> dict:
        try:
            value = response.json()
        except ValueError:
            raise ModelError(f"{self.url} answered 200 with a body that is not JSON: {response.text[:200]!r}") from None
        if not isinstance(value, dict):
            raise ModelError(f"{self.url} answered 200 with JSON that is not an object: {response.text[:200]!r}")
        return value

    def _refusal(self, response: httpx.Response) -> str:
        hint = {401: "set the API key in the variable named by --api-key-env",
                403: "the API key lacks access to this model",
                404: f"check --base-url (it ends where /chat/completions begins) and --model {self.model}",
                }.get(response.status_code, "fix the request (a server without logprobs needs --mode generate)")
        return f"{self.url} answered HTTP {response.status_code}: {_server_message(response)}; {hint}"


def chat_endpoint(base_url: str, *, api_key: str | None, api_version: str | None = None,
                  deployment: str | None = None) -> tuple[str, dict]:
    """(URL of the chat-completions endpoint, auth headers), OpenAI style or Azure OpenAI style."""
    parts = urlsplit(base_url.strip())
    query = dict(parse_qsl(parts.query))
    api_version = api_version or query.get("api-version")
    base = urlunsplit(parts._replace(query="")).rstrip("/").removesuffix("/chat/completions")
    if not api_version:
        return base + "/chat/completions", ({"Authorization": f"Bearer {api_key}"} if api_key else {})
    if "/openai/deployments/" not in base:
        if not deployment:
            raise ConfigError("Azure OpenAI needs a deployment: set model.deployment, or a base URL ending in "
                              "/openai/deployments/<deployment>")
        base = f"{base}/openai/deployments/{quote(deployment, safe='')}"
    return f"{base}/chat/completions?api-version={quote(api_version, safe='')}", \
        ({"api-key": api_key} if api_key else {})


def _server_message(response: httpx.Response) -> str:
    """The error message inside an OpenAI-style error body, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text[:200] or "(empty body)"
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return str(error or response.text)[:300]


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(value)))
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff


def create(config) -> OpenAICompatClassifier:
    config = adapters.resolve(config)[0]  # the default model name and template (idempotent)
    if not config.base_url:
        raise ConfigError("--backend openai needs --base-url, for example http://127.0.0.1:8000/v1")
    azure = bool(config.api_version) or "api-version=" in config.base_url
    key_env = "AZURE_OPENAI_API_KEY" if azure and config.api_key_env == "OPENAI_API_KEY" else config.api_key_env
    api_key = os.environ.get(key_env) or None
    cache_dir = Path(config.cache_dir) if config.cache_dir else models.cache_dir() / "api_responses"
    return OpenAICompatClassifier(
        config.base_url, config.model, prompts.load_template(config.template), mode=config.mode, api_key=api_key,
        max_concurrency=config.max_concurrency, timeout_s=config.timeout_s, max_retries=config.max_retries,
        max_new_tokens=config.max_new_tokens, reasoning_effort=config.reasoning_effort, cache_dir=cache_dir,
        api_version=config.api_version, deployment=config.deployment)
