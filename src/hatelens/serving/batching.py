"""Micro-batching: concurrent requests share forward passes within a token budget, taking turns.

Each request comes with its texts' token counts (posts.py). A batch holds at most `max_batch_texts` texts
and `max_batch_tokens` tokens. It opens with the next text of the request waiting longest (so none
starves), then is filled request by request in turn order, each taking its next texts up to its share of
the budget (the budget over the number of waiting requests; at least one text): the fewest tokens served
so far first, then the smallest request (a new request before one on its second turn, a short one before
a long one). So a long request is served over several batches, one text a batch while others wait; a
short one that arrives meanwhile waits for the batch in progress, never for the long one's remaining
turns; two long requests alternate. A text over the whole budget runs alone. Keep max_batch_tokens well
above the longest text (max_text_tokens), so one leaves room for short requests beside it.

A batch opens when a request is waiting and the worker is free, then waits up to `max_wait_s` for
company unless new requests already fill it (a request past its first turn does not count, nor a long
one past its share: clients that send again as soon as they are answered still get in first). The
blocking work (a forward pass, the log write) runs in one worker thread, one batch at a time, while the
event loop keeps accepting requests.

A batch that fails runs again one request at a time, so only the request that breaks the model gets
the error; a batch that takes longer than `batch_timeout_s` answers its requests with BatchTimeout.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

logger = logging.getLogger(__name__)


class BatchTimeout(Exception):
    """A batch ran past its time limit (the forward pass goes on in the worker thread; its answer is dropped)."""


@dataclass(eq=False)
class Request:
    """A request waiting for its results; batches take its texts in order, as many at a time as fit."""

    texts: list[str]
    groups: list[str]
    tokens: list[int]  # per text: its share of a batch's token budget
    request_id: str
    future: asyncio.Future = field(repr=False)  # receives every text's result, in order
    arrival: int = 0  # the request waiting longest gets a text in every batch; ties in turn order go first
    taken: int = 0  # texts handed to batches so far
    served_tokens: int = 0  # their tokens: the fewer, the sooner this request's next turn
    results: list = field(default_factory=list, repr=False)

    def turn_order(self) -> tuple[int, int, int]:
        return self.served_tokens, sum(self.tokens), self.arrival


@dataclass
class Job:
    """The texts one request has in one batch: its texts[offset : offset + len(texts)]."""

    request: Request = field(repr=False)
    offset: int
    texts: list[str]
    groups: list[str]
    tokens: list[int]

    @property
    def request_id(self) -> str:
        return self.request.request_id


class MicroBatcher:
    """Collects requests; `run_batch(jobs) -> [results per job]` runs each batch in the worker thread."""

    def __init__(self, run_batch: Callable[[Sequence[Job]], list], *, max_batch_texts: int, max_batch_tokens: int,
                 max_wait_s: float, batch_timeout_s: float):
        self.run_batch = run_batch
        self.max_batch_texts, self.max_batch_tokens = max_batch_texts, max_batch_tokens
        self.max_wait_s, self.batch_timeout_s = max_wait_s, batch_timeout_s
        self._pending: list[Request] = []  # requests with texts not yet handed to a batch
        self._arrived = asyncio.Event()
        self._arrivals = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hatelens-batch")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], groups: list[str], tokens: list[int], request_id: str) -> list:
        """This request's results in order (raises what its batch raised)."""
        self._arrivals += 1
        future = asyncio.get_running_loop().create_future()
        self._pending.append(Request(texts, groups, tokens, request_id, future, arrival=self._arrivals))
        self._arrived.set()
        return await future  # a client that leaves cancels it: its remaining texts are dropped

    async def _serve_forever(self) -> None:
        while True:
            jobs = await self._next_batch()
            if jobs:  # empty when every waiting client left
                await self._answer(jobs)

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        while not self._waiting():
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self.max_wait_s
        while not self._filled_by_newcomers() and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return self.take_batch()

    def _waiting(self) -> list[Request]:
        self._pending = [request for request in self._pending if not request.future.done()]
        return self._pending

    def _filled_by_newcomers(self) -> bool:
        """Whether the new requests alone fill a batch: as many as it holds texts, or their shares its budget."""
        waiting = self._waiting()
        new = [request for request in waiting if request.taken == 0]
        share = self.max_batch_tokens // max(1, len(waiting))
        return (len(new) >= self.max_batch_texts
                or sum(min(sum(request.tokens), share) for request in new) >= self.max_batch_tokens)

    def take_batch(self) -> list[Job]:
        """The next batch from the waiting requests (see the module's docstring), within both bounds."""
        waiting = self._waiting()
        if not waiting:
            return []
        share = self.max_batch_tokens // len(waiting)
        oldest = min(waiting, key=lambda request: request.arrival)
        ends = {oldest: oldest.taken + 1}  # request -> the end of its texts in this batch
        count, tokens = 1, oldest.tokens[oldest.taken]
        for request in sorted(waiting, key=Request.turn_order):
            end = ends.get(request, request.taken)
            own = sum(request.tokens[request.taken:end])
            while (end < len(request.texts) and count < self.max_batch_texts
                   and tokens + request.tokens[end] <= self.max_batch_tokens
                   and (end == request.taken or own + request.tokens[end] <= share)):
                count, tokens, own, end = count + 1, tokens + request.tokens[end], own + request.tokens[end], end + 1
            ends[request] = end
        jobs = []
        for request, end in ends.items():
            if end > request.taken:
                start = request.taken
                jobs.append(Job(request, start, request.texts[start:end], request.groups[start:end],
                                request.tokens[start:end]))
                request.taken, request.served_tokens = end, request.served_tokens + sum(request.tokens[start:end])
        self._pending = [request for request in self._pending if request.taken < len(request.texts)]
        return jobs

    async def _answer(self, jobs: list[Job]) -> None:
        """Run one batch and hand each request its results; when it fails, run each job alone."""
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
            request = job.request
            if not request.future.done():
                request.results += result
                if len(request.results) == len(request.texts):
                    request.future.set_result(request.results)


def _fail(jobs: Sequence[Job], error: Exception) -> None:
    for job in jobs:
        if not job.request.future.done():
            job.request.future.set_exception(error)
