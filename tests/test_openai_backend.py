"""The openai backend against real HTTP servers on loopback: small chat-completions apps written here
(429s, slow answers, hand-made logprobs), and, in the slow test file, llama.cpp's own server."""

import asyncio
import json
import math

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from live_server import serving

from hatelens.backends import prompts
from hatelens.backends.openai_compat import OpenAICompatClassifier, create
from hatelens.cli import main
from hatelens.config import ModelConfig
from hatelens.errors import ConfigError, ModelError

TEMPLATE = prompts.load_template("baseline")


def completion(content: str, top: dict[str, float] | None = None, lead: tuple[str, ...] = ()) -> dict:
    """A chat-completions body; `top` maps alternative tokens to probabilities at the answer's first token."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if top is not None:
        tokens = [{"token": token, "logprob": -0.1, "top_logprobs": [{"token": token, "logprob": -0.1}]}
                  for token in lead]
        alternatives = [{"token": token, "logprob": math.log(p)} for token, p in top.items()]
        tokens.append({"token": content, "logprob": alternatives[0]["logprob"], "top_logprobs": alternatives})
        choice["logprobs"] = {"content": tokens}
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [choice]}


class ChatServer:
    """A chat-completions app whose answer per request comes from `respond(body, attempt)`, where
    attempt counts earlier requests with the same body. Records bodies, headers and peak concurrency."""

    def __init__(self, respond):
        self.respond = respond
        self.bodies, self.authorizations = [], []
        self.in_flight = self.peak_in_flight = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        body = await request.json()
        attempt = sum(seen == body for seen in self.bodies)
        self.bodies.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            status, payload, delay_s, headers = self.respond(body, attempt)
            await asyncio.sleep(delay_s)
        finally:
            self.in_flight -= 1
        return JSONResponse(payload, status_code=status, headers=headers)


def post_text(body: dict) -> str:
    return body["messages"][-1]["content"].rsplit("Post: ", 1)[1]


def ok(payload, delay_s=0.0):
    return 200, payload, delay_s, {}


def classifier(url, **kwargs) -> OpenAICompatClassifier:
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAICompatClassifier(f"{url}/v1", "test-model", TEMPLATE, **kwargs)


def test_score_mode_sums_the_alternatives_that_spell_each_label():
    tops = {"one": {"Hate": 0.5, " h": 0.1, "Normal": 0.2, "Yes": 0.1},  # 0.6 vs 0.2
            "two": {"hate": 0.7, "Yes": 0.05},  # normal unlisted: the smallest listed probability stands in
            "three": {"Yes": 0.9, "Maybe": 0.05}}  # neither label listed: no score, the text decides
    def respond(body, attempt):
        if post_text(body) == "four":  # a reply with no content tokens at all
            return ok({"choices": [{"message": {"content": ""}, "logprobs": {"content": []}}]})
        return ok(completion("hate" if post_text(body) != "three" else "normal", tops[post_text(body)], lead=("**",)))

    server = ChatServer(respond)
    with serving(server.app) as url:
        outputs = classifier(url).classify(["one", "two", "three", "four"])
    assert outputs[0].score == pytest.approx(0.6 / 0.8)
    assert outputs[1].score == pytest.approx(0.7 / 0.75)
    assert (outputs[2].score, outputs[2].answer) == (None, "normal")
    assert (outputs[3].score, outputs[3].answer, outputs[3].raw) == (None, None, "")
    assert outputs[0].answer is None and outputs[0].raw == "hate"
    body = server.bodies[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0
    assert body["messages"] == TEMPLATE.messages(post_text(body))
    assert "reasoning_effort" not in body


def test_score_mode_needs_logprobs_from_the_server():
    server = ChatServer(lambda body, attempt: ok(completion("hate")) if post_text(body) == "plain" else
                        ok({"choices": [{"message": {"content": "hate"}, "logprobs": {"content": [{"t": 1}]}}]}))
    with serving(server.app) as url:
        with pytest.raises(ModelError, match="returned no logprobs.*use --mode generate"):
            classifier(url).classify(["plain"])
        with pytest.raises(ModelError, match="logprobs in an unexpected shape"):
            classifier(url).classify(["odd"])


def test_generate_mode_parses_the_answer_and_passes_reasoning_effort():
    answers = {"a": "Normal.", "b": "**hate**", "c": "I think it is hate"}
    server = ChatServer(lambda body, attempt: ok(completion(answers[post_text(body)])))
    with serving(server.app) as url:
        outputs = classifier(url, mode="generate", reasoning_effort="low", max_new_tokens=300).classify(list(answers))
    assert [output.answer for output in outputs] == ["normal", "hate", None]
    assert [output.raw for output in outputs] == list(answers.values())
    assert all(output.score is None for output in outputs)
    assert all(body["reasoning_effort"] == "low" and body["max_tokens"] == 300 for body in server.bodies)
    assert not any("logprobs" in body for body in server.bodies)


def test_429_and_5xx_are_retried_until_the_answer_comes():
    def respond(body, attempt):
        if post_text(body) == "busy" and attempt == 0:
            return 429, {"error": {"message": "rate limited"}}, 0.0, {"Retry-After": "0"}
        if post_text(body) == "flaky" and attempt < 2:
            return 503, {"error": "overloaded"}, 0.0, {}
        return ok(completion("normal"))

    server = ChatServer(respond)
    with serving(server.app) as url:
        outputs = classifier(url, mode="generate").classify(["busy", "flaky", "calm"])
    assert [output.answer for output in outputs] == ["normal"] * 3
    assert sorted(post_text(body) for body in server.bodies) == ["busy", "busy", "calm", "flaky", "flaky", "flaky"]


def test_retries_stop_at_max_retries_and_client_errors_are_not_retried():
    def respond(body, attempt):
        if post_text(body) == "down":
            return 503, {"error": {"message": "no replicas"}}, 0.0, {}
        return 400, {"error": {"message": "top_logprobs must be at most 5"}}, 0.0, {}

    server = ChatServer(respond)
    with serving(server.app) as url:
        with pytest.raises(ModelError, match=r"HTTP 503: no replicas; gave up after 3 tries \(max_retries=2\)"):
            classifier(url, mode="generate", max_retries=2).classify(["down"])
        with pytest.raises(ModelError, match="answered HTTP 400: top_logprobs must be at most 5"):
            classifier(url, max_retries=2).classify(["bad"])
    assert [post_text(body) for body in server.bodies] == ["down"] * 3 + ["bad"]


def test_a_slow_answer_times_out_and_is_retried():
    server = ChatServer(lambda body, attempt: ok(completion("hate"), delay_s=1.2 if attempt == 0 else 0.0))
    with serving(server.app) as url:
        assert classifier(url, mode="generate", timeout_s=0.5).classify(["slow"])[0].answer == "hate"
        with pytest.raises(ModelError, match=r"no answer within 0.5 s .*gave up after 1 tries"):
            classifier(url, mode="generate", timeout_s=0.5, max_retries=0).classify(["another"])
    assert len(server.bodies) == 3


def test_responses_are_cached_on_disk_so_a_rerun_sends_nothing(tmp_path):
    server = ChatServer(lambda body, attempt: ok(completion("hate", {"hate": 0.8, "normal": 0.2})))
    texts = ["a", "b", "c"]
    with serving(server.app) as url:
        first = classifier(url, cache_dir=tmp_path).classify(texts)
        again = classifier(url, cache_dir=tmp_path).classify(texts)
        assert len(server.bodies) == 3  # the second pass came from the cache
        classifier(url, cache_dir=tmp_path, mode="generate").classify(["a"])
        assert len(server.bodies) == 4  # another request body is another cache entry
    assert again == first and first[0].score == pytest.approx(0.8)
    cached = [json.loads(path.read_text()) for path in tmp_path.rglob("*.json")]
    assert len(cached) == 4
    assert {entry["request"]["messages"][-1]["content"].rsplit("Post: ", 1)[1] for entry in cached} == set(texts)


def test_requests_run_max_concurrency_at_a_time():
    server = ChatServer(lambda body, attempt: ok(completion("normal"), delay_s=0.4))
    with serving(server.app) as url:
        outputs = classifier(url, mode="generate", max_concurrency=3).classify([f"t{i}" for i in range(9)])
    assert [output.answer for output in outputs] == ["normal"] * 9
    assert server.peak_in_flight == 3


def test_the_api_key_comes_from_the_named_variable(monkeypatch, tmp_path):
    def respond(body, attempt):
        return ok(completion("hate")) if server.authorizations[-1] == "Bearer k-123" else \
            (401, {"error": {"message": "invalid api key"}}, 0.0, {})

    server = ChatServer(respond)
    with serving(server.app) as url:
        config = ModelConfig(backend="openai", base_url=f"{url}/v1", api_key_env="TEST_LLM_KEY", mode="generate",
                             cache_dir=str(tmp_path))
        with pytest.raises(ModelError, match="HTTP 401: invalid api key; set the API key"):
            create(config).classify(["x"])
        monkeypatch.setenv("TEST_LLM_KEY", "k-123")
        assert create(config).classify(["x"])[0].answer == "hate"
    assert server.authorizations == [None, "Bearer k-123"]


def test_the_backend_needs_a_base_url():
    with pytest.raises(ConfigError, match="--backend openai needs --base-url"):
        create(ModelConfig(backend="openai"))


def test_hatelens_evaluate_runs_through_the_openai_backend(tmp_path, capsys):
    data = tmp_path / "posts.jsonl"
    rows = [{"text": f"{word} post {i}", "label": "hate" if word == "vile" else "normal",
             "group": "lgbtq" if i % 2 else "mexican"} for i, word in enumerate(["vile", "kind"] * 4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def respond(body, attempt):
        vile = post_text(body).startswith("vile")
        return ok(completion("hate" if vile else "normal", {"hate": 0.9 if vile else 0.2, "normal": 0.1 if vile else 0.7}))

    server = ChatServer(respond)
    with serving(server.app) as url:
        code = main(["evaluate", "--backend", "openai", "--base-url", f"{url}/v1", "--model", "served-model",
                     "--data", str(data), "--output-dir", str(tmp_path / "runs"), "--quiet", "n_bootstrap=10",
                     f"model.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    run_dir = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["f1"] == 1.0 and metrics["roc_auc"] == 1.0
    assert metrics["run"]["model_version"] == f"served-model@{url}/v1"
    assert len(server.bodies) == 8


# -- a real third-party server: llama.cpp's (llama-cpp-python[server]) with the embedded SmolLM2 GGUF --


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory):
    import importlib.util
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from hatelens.backends.models import resolve_model

    if importlib.util.find_spec("llama_cpp") is None:  # found, not imported: the server runs in its own process
        pytest.skip("needs llama-cpp-python[server]: see docs/serving.md for the install line")
    source = resolve_model("smollm2-135m")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("llama_cpp") / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(source.path) / source.gguf_file),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
             "--logits_all", "true"], stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"llama.cpp server exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama.cpp server did not start in 180 s"
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["score", "generate"])
def test_evaluate_through_llama_cpp_server(llama_cpp_server, mode, tmp_path):
    url, _ = llama_cpp_server
    command = ["evaluate", "--backend", "openai", "--base-url", f"{url}/v1", "--model", "smollm2-135m",
               "--mode", mode, "--data", "data/validation.jsonl", "--max-samples", "8", "--quiet",
               "--max-concurrency", "2", "n_bootstrap=10", f"model.cache_dir={tmp_path / 'cache'}"]
    assert main(command + ["--output-dir", str(tmp_path / "first")]) == 0
    rows = [json.loads(line) for path in (tmp_path / "first").rglob("predictions.jsonl")
            for line in path.read_text().splitlines()]
    assert len(rows) == 8 and all(isinstance(row["raw"], str) for row in rows)
    if mode == "score":
        scored = [row["score"] for row in rows if row["score"] is not None]
        assert len(scored) >= 6 and all(0.0 < score < 1.0 for score in scored)
    else:
        assert all(row["score"] is None for row in rows)
    cached = list((tmp_path / "cache").rglob("*.json"))
    assert len(cached) == 8
    # the same evaluation again is answered from the cache: nothing new is cached, same predictions
    assert main(command + ["--output-dir", str(tmp_path / "again")]) == 0
    again = [json.loads(line) for path in (tmp_path / "again").rglob("predictions.jsonl")
             for line in path.read_text().splitlines()]
    assert again == rows and len(list((tmp_path / "cache").rglob("*.json"))) == 8


# -- Azure OpenAI: api-key header, api-version query, deployment path --------------------------------


class AzureServer:
    """An Azure-OpenAI-shaped app: answers only at /openai/deployments/<name>/chat/completions with
    ?api-version= and an api-key header (no Bearer); records what each request carried."""

    def __init__(self):
        self.requests = []
        self.app = FastAPI()
        self.app.post("/openai/deployments/{deployment}/chat/completions")(self.chat)

    async def chat(self, deployment: str, request: Request):
        self.requests.append({"deployment": deployment, "api_version": request.query_params.get("api-version"),
                              "api_key": request.headers.get("api-key"),
                              "authorization": request.headers.get("authorization")})
        if request.headers.get("api-key") != "az-key":
            return JSONResponse({"error": {"code": "401", "message": "Access denied due to invalid subscription key"}},
                                status_code=401)
        if not request.query_params.get("api-version"):
            return JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, status_code=404)
        return JSONResponse(completion("hate", {"hate": 0.8, "normal": 0.2}))


def test_azure_openai_sends_api_key_header_api_version_and_deployment_path(monkeypatch, tmp_path):
    server = AzureServer()
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    with serving(server.app) as url:
        by_fields = ModelConfig(backend="openai", base_url=url, model="gpt-4o-mini", deployment="prod-4o",
                                api_version="2024-10-21", cache_dir=str(tmp_path / "a"))
        with pytest.raises(ModelError, match="HTTP 401: Access denied due to invalid subscription key"):
            create(by_fields).classify(["x"])
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
        assert create(by_fields).classify(["x"])[0].score == pytest.approx(0.8)
        # the whole deployment URL, as the Azure portal shows it; the key from a variable the user named
        monkeypatch.setenv("MY_AZURE_KEY", "az-key")
        by_url = ModelConfig(backend="openai", base_url=f"{url}/openai/deployments/other/chat/completions"
                             "?api-version=2025-01-01-preview", api_key_env="MY_AZURE_KEY", mode="generate",
                             cache_dir=str(tmp_path / "b"))
        assert create(by_url).classify(["x"])[0].answer == "hate"
    assert server.requests == [
        {"deployment": "prod-4o", "api_version": "2024-10-21", "api_key": None, "authorization": None},
        {"deployment": "prod-4o", "api_version": "2024-10-21", "api_key": "az-key", "authorization": None},
        {"deployment": "other", "api_version": "2025-01-01-preview", "api_key": "az-key", "authorization": None},
    ]


def test_azure_flags_on_the_command_line(monkeypatch, tmp_path):
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps({"text": f"post {i}", "label": "hate" if i % 2 else "normal",
                                        "group": "lgbtq"}) + "\n" for i in range(4)))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    server = AzureServer()
    with serving(server.app) as url:
        code = main(["evaluate", "--backend", "openai", "--base-url", url, "--model", "gpt-4o-mini",
                     "--deployment", "prod", "--api-version", "2024-10-21", "--data", str(data),
                     "--output-dir", str(tmp_path / "runs"), "--quiet", "n_bootstrap=10",
                     f"model.cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    assert {(r["deployment"], r["api_version"], r["api_key"]) for r in server.requests} == \
        {("prod", "2024-10-21", "az-key")}
    assert len(server.requests) == 4
