"""Micro-batching: concurrent requests merged into one classify call.

The first request to arrive opens a batch; requests that arrive within `max_wait_s` join it until it
holds `max_batch_texts` texts. A request is never split, so one larger than the bound runs alone.
The blocking work (a forward pass, the log write) runs in one worker thread, one batch at a time,
while the event loop keeps accepting requests: under load, the next batch fills while this one runs.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One request's texts waiting for a batch; `future` receives that request's results."""

    texts: list[str]
    groups: list[str]
    request_id: str
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects Jobs; `run_batch(jobs) -> [results per job]` runs each batch in the worker thread."""

    def __init__(self, run_batch: Callable[[Sequence[Job]], list], *, max_batch_texts: int, max_wait_s: float):
        self.run_batch = run_batch
        self.max_batch_texts = max_batch_texts
        self.max_wait_s = max_wait_s
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

    async def submit(self, texts: list[str], groups: list[str], request_id: str):
        """Wait for this request's results (raises what the batch raised)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(texts, groups, request_id, future))
        return await future

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        first = self._held or await self._queue.get()
        self._held = None
        jobs, size = [first], len(first.texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_texts:
            remaining = deadline - loop.time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                job = self._queue.get_nowait() if not self._queue.empty() else \
                    await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if size + len(job.texts) > self.max_batch_texts:
                self._held = job
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            live = [job for job in jobs if not job.future.done()]  # a client that left cancelled its future
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, live)
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests; the loop must live on
                logger.exception("batch of %d request(s) failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for job, result in zip(live, results):
                if not job.future.done():
                    job.future.set_result(result)
