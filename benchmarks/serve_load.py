"""Load on `hatelens serve` over loopback: N concurrent clients, a bounded number of requests.

    python benchmarks/serve_load.py --model smollm2-135m --requests 120 --concurrency 1 8
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --requests 500 --concurrency 16

Without --url it starts `hatelens serve` itself on a free port (once per --max-batch-texts value,
with a fresh prediction log in a temporary folder) and stops it afterwards. Texts come from the
validation split, one per request unless --texts-per-request says otherwise. Prints throughput,
p50 / p95 / p99 latency, the error count and the mean texts per forward pass (from /metrics);
--output appends the table, with machine and date, to a Markdown file.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def started_server(model: str, max_batch_texts: int, max_wait_ms: float, threads: int | None,
                   load_timeout_s: float = 300):
    """`hatelens serve` in a subprocess; yields its URL once /healthz says ready."""
    port = free_port()
    # torch's OpenMP threads spin badly when other processes want the same cores: pin them on shared machines
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "hatelens", "serve", "--model", model, "--port", str(port),
                   "--db", str(Path(folder) / "predictions.sqlite"), "--device", "cpu",
                   f"limits.max_batch_texts={max_batch_texts}", f"limits.max_wait_ms={max_wait_ms}"]
        log = open(Path(folder) / "server.log", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + load_timeout_s
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"server exited with {process.returncode}:\n"
                                     + (Path(folder) / "server.log").read_text()[-2000:])
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"server not ready after {load_timeout_s} s")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


async def drive(url: str, texts: list[str], *, concurrency: int, requests: int, texts_per_request: int,
                api_key: str | None) -> dict:
    """`concurrency` clients send `requests` requests in all, each as soon as its previous one returned."""
    latencies, errors = [], 0
    next_request = 0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def client(session: httpx.AsyncClient):
        nonlocal next_request, errors
        while next_request < requests:
            index = next_request
            next_request += 1
            batch = [texts[(index * texts_per_request + k) % len(texts)] for k in range(texts_per_request)]
            started = time.perf_counter()
            try:
                response = await session.post(f"{url}/v1/classify", json={"texts": batch}, headers=headers)
                failed = response.status_code != 200
            except httpx.HTTPError:
                failed = True
            latencies.append(time.perf_counter() - started)
            errors += failed

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))] * 1000

    return {"requests": requests, "errors": errors, "wall_s": wall_s, "requests_per_s": requests / wall_s,
            "texts_per_s": requests * texts_per_request / wall_s,
            "p50_ms": percentile(50), "p95_ms": percentile(95), "p99_ms": percentile(99)}


def table(rows: list[tuple[int, int, dict, float | None]], texts_per_request: int) -> list[str]:
    lines = ["| max batch | clients | requests | errors | req/s | texts/s | p50 ms | p95 ms | p99 ms | texts per pass |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for max_batch, concurrency, result, per_batch in rows:
        lines.append(f"| {max_batch} | {concurrency} | {result['requests']} | {result['errors']} | "
                     f"{result['requests_per_s']:.1f} | {result['texts_per_s']:.1f} | {result['p50_ms']:.0f} | "
                     f"{result['p95_ms']:.0f} | {result['p99_ms']:.0f} | "
                     f"{'–' if per_batch is None else f'{per_batch:.1f}'} |")
    lines.append(f"\n{texts_per_request} text(s) per request.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server; default: start `hatelens serve --model MODEL`")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="data/validation.jsonl", help="JSONL with a text field per line")
    parser.add_argument("--requests", type=int, default=120, help="requests per client count")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client counts to run")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--max-batch-texts", type=int, nargs="+", default=[32],
                        help="server batch bounds to compare (started servers only)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for a started server (default: torch's choice)")
    parser.add_argument("--warmup", type=int, default=4, help="requests sent before timing")
    parser.add_argument("--output", help="append the table to this Markdown file")
    parser.add_argument("--note", default="", help="a line written above the table (e.g. what else ran)")
    args = parser.parse_args()

    texts = [json.loads(line)["text"] for line in Path(args.data).read_text().splitlines() if line.strip()]
    api_key = os.environ.get("HATELENS_API_KEY")
    rows = []
    for max_batch in ([None] if args.url else args.max_batch_texts):
        with (started_server(args.model, max_batch, args.max_wait_ms, args.threads) if max_batch else _given(args.url)) as url:
            asyncio.run(drive(url, texts, concurrency=1, requests=args.warmup,
                              texts_per_request=args.texts_per_request, api_key=api_key))
            for concurrency in args.concurrency:
                before = _batch_totals(url)
                result = asyncio.run(drive(url, texts, concurrency=concurrency, requests=args.requests,
                                           texts_per_request=args.texts_per_request, api_key=api_key))
                after = _batch_totals(url)
                per_batch = (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else None
                rows.append((max_batch or "server's", concurrency, result, per_batch))
                print(table(rows[-1:], args.texts_per_request)[2], flush=True)
    lines = table(rows, args.texts_per_request)
    print("\n".join(lines))
    if args.output:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = [f"## {stamp}: {args.model if not args.url else args.url}", "",
                  f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} CPU cores. Command: `python {' '.join(sys.argv)}`", ""]
        if args.note:
            header += [args.note, ""]
        with open(args.output, "a", encoding="utf-8") as file:
            file.write("\n".join(header + lines) + "\n\n")


@contextmanager
def _given(url: str):
    yield url.rstrip("/")


def _batch_totals(url: str) -> tuple[float, float]:
    samples = {sample.name: sample.value for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
               for sample in family.samples}
    return samples.get("hatelens_batch_texts_sum", 0.0), samples.get("hatelens_batch_texts_count", 0.0)


if __name__ == "__main__":
    main()
