"""Scheduling by tokens (issue 14): posts cut to max_text_tokens up front, batches within a token budget,
requests taking turns so a long one never holds up a short one. The turn order on the batcher itself,
then the real server (uvicorn on a loopback port, the tiny random Llama, a SQLite log)."""

import asyncio
import copy
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fixtures import serve_app, serving
from prometheus_client.parser import text_string_to_metric_families

from hatelens.backends.truncation import cut_posts
from hatelens.config import ServeLimits
from hatelens.serving.batching import MicroBatcher


def _turns(requests: list[tuple[str, list[int]]], *, max_batch_texts: int = 32, max_batch_tokens: int,
           later: tuple[int, str, list[int]] | None = None) -> list[list]:
    """The batches a batcher forms for requests that wait at once ((batch index, name, tokens) of one that
    arrives after that many batches): [[(request id, offset, texts)]]."""

    async def run():
        batcher = MicroBatcher(lambda jobs: None, max_batch_texts=max_batch_texts, max_batch_tokens=max_batch_tokens,
                               max_wait_s=0, batch_timeout_s=1)

        def submit(name, tokens):
            texts = [f"{name}{k}" for k in range(len(tokens))]
            return asyncio.ensure_future(batcher.submit(texts, ["unknown"] * len(tokens), tokens, name))

        waiting = [submit(name, tokens) for name, tokens in requests]
        await asyncio.sleep(0)  # every request is queued
        batches = []
        while jobs := batcher.take_batch():
            batches.append([(job.request_id, job.offset, len(job.texts)) for job in jobs])
            if later and len(batches) == later[0]:
                waiting.append(submit(*later[1:]))
                await asyncio.sleep(0)
        for future in waiting:
            future.cancel()
        return batches

    return asyncio.run(run())


def test_a_short_request_goes_before_the_turns_a_long_one_has_left():
    # both waiting: one post each (a share is 15 tokens); alone, the long one fills the budget
    batches = _turns([("long", [10] * 10), ("short", [5])], max_batch_tokens=30)
    assert batches == [[("long", 0, 1), ("short", 0, 1)], [("long", 1, 3)], [("long", 4, 3)], [("long", 7, 3)]]
    # arriving while the long one is served: in the very next batch, not after the long one's 3 turns
    batches = _turns([("long", [10] * 10)], max_batch_tokens=30, later=(1, "short", [5]))
    assert batches == [[("long", 0, 3)], [("long", 3, 1), ("short", 0, 1)], [("long", 4, 3)], [("long", 7, 3)]]


def test_long_requests_share_batches_none_starves_and_a_text_over_the_budget_runs_alone():
    batches = _turns([("a", [20] * 4), ("b", [20] * 4)], max_batch_tokens=40)
    assert batches == [[("a", index, 1), ("b", index, 1)] for index in range(4)]  # they alternate
    # short requests that fill every batch still leave the request waiting longest one text per batch
    crowd = [(f"short{k}", [10]) for k in range(6)]
    batches = _turns([("long", [20] * 2), *crowd], max_batch_tokens=40)
    assert [[name for name, _, _ in batch] for batch in batches] == [
        ["long", "short0", "short1"], ["long", "short2", "short3"], ["short4", "short5"]]
    assert _turns([("huge", [50]), ("small", [5])], max_batch_tokens=40) == [[("huge", 0, 1)], [("small", 0, 1)]]
    assert _turns([("many", [1] * 10)], max_batch_texts=4, max_batch_tokens=100) == [
        [("many", 0, 4)], [("many", 4, 4)], [("many", 8, 2)]]


def _metrics(url: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
            for sample in family.samples}


@pytest.fixture
def slow_classifier(classifier):
    """The tiny Llama (its tokenizer counts the posts) taking 2 ms per text token, as a real model would."""
    slow = copy.copy(classifier)

    def classify(texts, groups=None):
        time.sleep(0.002 * sum(len(ids) for ids in classifier.tokenizer(list(texts)).input_ids))
        return classifier.classify(texts, groups)

    slow.classify = classify
    return slow


LIMITS = ServeLimits(max_texts=24, max_text_tokens=40, max_batch_tokens=80, max_wait_ms=5)
LONG_POSTS = [f"post {index} " + "about the people next door and what they said " * 6 for index in range(24)]


def test_long_posts_are_cut_to_the_token_cap_and_take_turns_with_a_short_request(classifier, slow_classifier,
                                                                                   db_path):
    with serving(serve_app(slow_classifier, db_path, limits=LIMITS)) as url:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            long = pool.submit(client.post, f"{url}/v1/classify", json={"texts": LONG_POSTS})
            time.sleep(0.3)  # the long request is in its turns
            short = client.post(f"{url}/v1/classify", json={"texts": ["short"]})
            short_s = time.perf_counter() - started
            long_response = long.result()
            long_s = time.perf_counter() - started
        metrics = _metrics(url)
    results = long_response.json()["results"]
    assert short.status_code == 200 and long_response.status_code == 200 and len(results) == 24
    assert short_s < long_s / 2  # answered between the long request's turns (12 of 2 posts), not after them
    assert [result["truncated"] for result in results] == [True] * 24
    assert short.json()["results"][0]["truncated"] is False
    assert metrics[("hatelens_truncated_texts_total", ())] == 24
    batches = metrics[("hatelens_batch_tokens_count", ())]
    short_tokens = len(classifier.tokenizer("short", add_special_tokens=False).input_ids)
    assert batches >= 13 and metrics[("hatelens_batch_tokens_sum", ())] == 24 * 40 + short_tokens
    assert metrics[("hatelens_batch_tokens_bucket", (("le", "128.0"),))] == batches  # none over the budget
    cut = cut_posts(LONG_POSTS[:1], classifier.tokenizer, 40)[0][0]
    assert LONG_POSTS[0].startswith(cut) and len(cut) < len(LONG_POSTS[0])
    assert results[0]["score"] == pytest.approx(classifier.classify([cut])[0].score, abs=1e-5)  # the cut is scored


def test_a_short_request_does_not_wait_behind_every_long_one(slow_classifier, db_path):
    with serving(serve_app(slow_classifier, db_path, limits=LIMITS)) as url:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(3) as pool:
            started = time.perf_counter()
            longs = [pool.submit(client.post, f"{url}/v1/classify", json={"texts": LONG_POSTS[:12]}) for _ in range(3)]
            time.sleep(0.3)
            short = client.post(f"{url}/v1/classify", json={"texts": ["short"]})
            short_s = time.perf_counter() - started
            statuses = [future.result().status_code for future in longs]
            long_s = time.perf_counter() - started  # the last of them
    assert short.status_code == 200 and statuses == [200] * 3
    # 3 x 6 turns of 160 ms: the short request waits for the turn in progress, then goes first
    assert short_s < long_s / 3
