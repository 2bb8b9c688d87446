"""Micro-batching: concurrent requests merged into one classify call, long requests taking turns.

A request is cut into pieces of at most `max_batch_texts` texts and `max_batch_chars` characters; each
piece queues on its own, the next one only after the last was answered, so a long request takes turns
with the short requests that arrive meanwhile instead of holding the model for its whole length.
The first piece to arrive opens a batch; pieces that arrive within `max_wait_s` join it while the
batch stays within both bounds. The blocking work (a forward pass, the log write) runs in one worker
thread, one batch at a time, while the event loop keeps accepting requests.

A batch that fails runs again one piece at a time, so only the piece that breaks the model gets the
error; a batch that takes longer than `batch_timeout_s` answers its requests with BatchTimeout.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

logger = logging.getLogger(__name__)


class BatchTimeout(Exception):
    """A batch ran past its time limit (the forward pass goes on in the worker thread; its answer is dropped)."""


@dataclass
class Job:
    """One piece of a request waiting for a batch; `future` receives that piece's results."""

    texts: list[str]
    groups: list[str]
    request_id: str
    future: asyncio.Future = field(repr=False)
    offset: int = 0  # the position of texts[0] in its request


def piece_bounds(texts: Sequence[str], max_texts: int, max_chars: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive pieces, each within both bounds (a text longer than max_chars alone)."""
    bounds, start, chars = [], 0, 0
    for index, text in enumerate(texts):
        if index > start and (index - start >= max_texts or chars + len(text) > max_chars):
            bounds.append((start, index))
            start, chars = index, 0
        chars += len(text)
    bounds.append((start, len(texts)))
    return bounds


class MicroBatcher:
    """Collects Jobs; `run_batch(jobs) -> [results per job]` runs each batch in the worker thread."""

    def __init__(self, run_batch: Callable[[Sequence[Job]], list], *, max_batch_texts: int, max_batch_chars: int,
                 max_wait_s: float, batch_timeout_s: float):
        self.run_batch = run_batch
        self.max_batch_texts, self.max_batch_chars = max_batch_texts, max_batch_chars
        self.max_wait_s, self.batch_timeout_s = max_wait_s, batch_timeout_s
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: Job | None = None  # a job that did not fit the last batch: it opens the next one
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hatelens-batch")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], groups: list[str], request_id: str) -> list:
        """This request's results in order, piece by piece (raises what its batch raised)."""
        loop = asyncio.get_running_loop()
        results = []
        for start, end in piece_bounds(texts, self.max_batch_texts, self.max_batch_chars):
            future = loop.create_future()
            await self._queue.put(Job(texts[start:end], groups[start:end], request_id, future, offset=start))
            results += await future
        return results

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        first = self._held or await self._queue.get()
        self._held = None
        jobs, size, chars = [first], len(first.texts), _chars(first)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_texts and chars < self.max_batch_chars:
            remaining = deadline - loop.time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                job = self._queue.get_nowait() if not self._queue.empty() else \
                    await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if size + len(job.texts) > self.max_batch_texts or chars + _chars(job) > self.max_batch_chars:
                self._held = job
                break
            jobs.append(job)
            size, chars = size + len(job.texts), chars + _chars(job)
        return jobs

    async def _serve_forever(self) -> None:
        while True:
            live = [job for job in await self._next_batch() if not job.future.done()]  # a client that left
            if live:  # cancelled its future
                await self._answer(live)

    async def _answer(self, jobs: list[Job]) -> None:
        """Run one batch and hand each job its results; when it fails, run each job alone."""
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.wait_for(loop.run_in_executor(self._executor, self.run_batch, jobs),
                                             self.batch_timeout_s)
        except TimeoutError:
            logger.error("a batch of %d text(s) ran past %s s; its requests were answered 503",
                         sum(len(job.texts) for job in jobs), self.batch_timeout_s)
            _fail(jobs, BatchTimeout(f"the batch ran past {self.batch_timeout_s} s"))
            return
        except Exception as error:  # noqa: BLE001 - handed to the waiting request; the loop must live on
            if len(jobs) == 1:
                logger.exception("request %s failed", jobs[0].request_id)
                _fail(jobs, error)
                return
            logger.warning("a batch of %d requests failed; running each alone", len(jobs))
            for job in jobs:
                await self._answer([job])
            return
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)


def _chars(job: Job) -> int:
    return sum(len(text) for text in job.texts)


def _fail(jobs: Sequence[Job], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
