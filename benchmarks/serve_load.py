"""Load on `hatelens serve` over loopback: N concurrent clients, a bounded number of requests.

    python benchmarks/serve_load.py --model smollm2-135m --requests 120 --concurrency 1 8
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --requests 500 --concurrency 16

Without --url it starts `hatelens serve` itself on a free port (once per --max-batch-texts value,
with a fresh prediction log in a temporary folder) and stops it afterwards. Texts come from the
validation split, one per request unless --texts-per-request says otherwise. Prints throughput,
p50 / p95 / p99 latency, the error count and the mean texts per forward pass (from /metrics);
--output appends the table, with machine and date, to a Markdown file.

The largest request the server's limits allow, beside small clients (issue 14: it answers within 10 s
on 2 CPU cores while the others' p99 stays within 2x of an idle run):

    python benchmarks/serve_load.py --scenario largest --template compact            # ~3 minutes
    python benchmarks/serve_load.py --scenario largest --template compact --quick    # a smoke: ~1 minute

It starts `hatelens serve` with its default limits (or --set limits.KEY=VALUE), sends one largest request
alone (max_texts texts of max_text_chars characters, test-split posts joined), then runs
--small-clients clients (1-text requests of test posts, each sent as soon as the last was answered) for
--seconds while idle, and again while --large-clients clients send the largest request back to back.
It appends the table, machine and verdicts to benchmarks/results/serve_largest.md (not with --quick).
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
def started_server(model: str, overrides: list[str], threads: int | None, load_timeout_s: float = 300,
                   template: str | None = None):
    """`hatelens serve` in a subprocess with `key=value` overrides; yields its URL once /healthz says ready."""
    port = free_port()
    # torch's OpenMP threads spin badly when other processes want the same cores: pin them on shared machines
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "hatelens", "serve", "--model", model, "--port", str(port),
                   "--db", str(Path(folder) / "predictions.sqlite"), "--device", "cpu", *overrides]
        command += ["--template", template] if template else []
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
            seconds, failed = await timed_post(session, url, batch, headers)
            latencies.append(seconds)
            errors += failed

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    return {"requests": requests, "errors": errors, "wall_s": wall_s, "requests_per_s": requests / wall_s,
            "texts_per_s": requests * texts_per_request / wall_s, "p50_ms": percentile(latencies, 50) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


async def timed_post(session: httpx.AsyncClient, url: str, texts: list[str], headers: dict) -> tuple[float, bool]:
    """(seconds, failed?) of one POST /v1/classify."""
    started = time.perf_counter()
    try:
        response = await session.post(f"{url}/v1/classify", json={"texts": texts}, headers=headers)
        failed = response.status_code != 200
    except httpx.HTTPError:
        failed = True
    return time.perf_counter() - started, failed


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank p-th percentile (NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


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
    parser.add_argument("--scenario", choices=("load", "largest"), default="load",
                        help="load: N clients, a bounded number of requests; largest: the largest request beside "
                             "small clients (issue 14)")
    parser.add_argument("--url", help="a running server; default: start `hatelens serve --model MODEL`")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--template", help="the served prompt template (default: the server's)")
    parser.add_argument("--data", help="JSONL or JSON list with a text field per row (load: data/validation.jsonl; "
                                       "largest: data/unified/unified_test.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for a started server, e.g. limits.max_text_tokens=128 (repeatable)")
    parser.add_argument("--requests", type=int, default=120, help="requests per client count")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client counts to run")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--max-batch-texts", type=int, nargs="+", default=[32],
                        help="server batch bounds to compare (started servers only)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--small-clients", type=int, default=4, help="largest: clients sending 1-text requests")
    parser.add_argument("--large-clients", type=int, default=1, help="largest: clients sending the largest request")
    parser.add_argument("--seconds", type=float, help="largest: length of the idle and the loaded run (60; --quick 5)")
    parser.add_argument("--quick", action="store_true", help="largest: a short smoke run that writes no file")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for a started server (default: torch's choice)")
    parser.add_argument("--warmup", type=int, default=4, help="requests sent before timing")
    parser.add_argument("--output", help="append the table to this Markdown file "
                                         "(largest: default benchmarks/results/serve_largest.md)")
    parser.add_argument("--note", default="", help="a line written above the table (e.g. what else ran)")
    args = parser.parse_args()
    (run_largest if args.scenario == "largest" else run_load)(args)


def run_load(args: argparse.Namespace) -> None:
    texts = load_texts(args.data or "data/validation.jsonl")
    api_key = os.environ.get("HATELENS_API_KEY")
    rows = []
    for max_batch in ([None] if args.url else args.max_batch_texts):
        overrides = [f"limits.max_batch_texts={max_batch}", f"limits.max_wait_ms={args.max_wait_ms}", *args.set]
        with (started_server(args.model, overrides, args.threads, template=args.template) if max_batch
              else _given(args.url)) as url:
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


def load_texts(path: str) -> list[str]:
    """The `text` of every row of a JSONL file or a JSON list."""
    content = Path(path).read_text(encoding="utf-8")
    rows = json.loads(content) if path.endswith(".json") else [json.loads(line) for line in content.splitlines()
                                                               if line.strip()]
    return [row["text"] for row in rows]


# -- the largest request the limits allow, beside small clients (issue 14) -------------------------------
GOAL_LARGEST_S = 10.0  # the largest request answers within this ...
GOAL_P99_RATIO = 2.0  # ... while the small clients' p99 stays within this multiple of an idle run's


def run_largest(args: argparse.Namespace) -> None:
    from hatelens.config import ServeConfig, load_config

    limits = load_config(ServeConfig, None, args.set).limits
    posts = load_texts(args.data or "data/unified/unified_test.json")
    largest = largest_request(posts, limits.max_texts, limits.max_text_chars)
    body_bytes = len(json.dumps({"texts": largest}).encode())
    if body_bytes > limits.max_body_bytes:
        raise SystemExit(f"the largest request's body is {body_bytes:,} bytes, over limits.max_body_bytes")
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    api_key = os.environ.get("HATELENS_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    load_average = os.getloadavg()[0]
    with (started_server(args.model, args.set, args.threads, template=args.template) if not args.url
          else _given(args.url)) as url:
        asyncio.run(drive(url, posts, concurrency=1, requests=args.warmup, texts_per_request=1,
                          api_key=api_key))
        before = _samples(url)
        alone = asyncio.run(clients_for(url, posts, largest, small=0, large=1, seconds=0, headers=headers))
        tokens = _samples(url)["hatelens_batch_tokens_sum"] - before["hatelens_batch_tokens_sum"]
        print(f"the largest request alone: {alone['large'][0]:.2f} s, {tokens:,.0f} tokens", flush=True)
        runs = {}
        for name, large in (("idle", 0), ("with the largest request", args.large_clients)):
            before = _samples(url)
            runs[name] = asyncio.run(clients_for(url, posts, largest, small=args.small_clients, large=large,
                                                 seconds=seconds, headers=headers))
            after = _samples(url)
            runs[name]["tokens_per_pass"] = ((after["hatelens_batch_tokens_sum"] - before["hatelens_batch_tokens_sum"])
                                             / max(1.0, after["hatelens_batch_tokens_count"]
                                                   - before["hatelens_batch_tokens_count"]))
            print(largest_table({name: runs[name]})[2], flush=True)
    lines = largest_report(limits, body_bytes, tokens, alone, runs)
    print("\n".join(lines))
    output = args.output or (None if args.quick else "benchmarks/results/serve_largest.md")
    if output:
        write_largest(output, args, load_average, seconds, lines)


def largest_request(posts: list[str], max_texts: int, max_text_chars: int) -> list[str]:
    """`max_texts` texts of exactly `max_text_chars` characters: posts joined, each text opening on another post."""
    posts = [" ".join(post.split()) for post in posts]
    texts = []
    for index in range(max_texts):
        first, parts, length = index * len(posts) // max_texts, [], 0
        while length < max_text_chars:
            parts.append(posts[(first + len(parts)) % len(posts)])
            length += len(parts[-1]) + 1
        texts.append(" ".join(parts)[:max_text_chars])
    return texts


async def clients_for(url: str, posts: list[str], largest: list[str], *, small: int, large: int, seconds: float,
                      headers: dict) -> dict:
    """`small` clients send 1-text requests and `large` ones the largest request, each again as soon as it
    is answered, until `seconds` have passed; the small ones go on until the last largest request is answered,
    so every one of them is timed under the same load."""
    runs = {"small": [], "large": [], "errors": 0}  # latencies in seconds by kind; failed requests
    until = time.perf_counter() + seconds
    large_left = large

    async def client(session: httpx.AsyncClient, kind: str, number: int):
        nonlocal large_left
        sent = 0
        while sent == 0 or time.perf_counter() < until or (kind == "small" and large_left):
            texts = largest if kind == "large" else [posts[(sent * small + number) % len(posts)]]
            seconds_taken, failed = await timed_post(session, url, texts, headers)
            runs[kind].append(seconds_taken)
            runs["errors"] += failed
            sent += 1
        large_left -= kind == "large"

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=max(1, small))) as small_session, \
            httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=max(1, large))) as large_session:
        await asyncio.gather(*(client(small_session, "small", number) for number in range(small)),
                             *(client(large_session, "large", number) for number in range(large)))
    return runs


def largest_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| run | small requests | errors | small p50 ms | small p99 ms | largest requests | largest p50 s | "
             "largest max s | tokens per batch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in runs.items():
        small, large = run["small"], run["large"]
        largest = (f"{len(large)} | {percentile(large, 50):.2f} | {max(large):.2f}" if large else "– | – | –")
        lines.append(f"| {name} | {len(small)} | {run['errors']} | {percentile(small, 50) * 1000:.0f} | "
                     f"{percentile(small, 99) * 1000:.0f} | {largest} | {run['tokens_per_pass']:.0f} |")
    return lines


def largest_report(limits, body_bytes: int, tokens: float, alone: dict, runs: dict[str, dict]) -> list[str]:
    idle, loaded = runs["idle"], runs["with the largest request"]
    ratio = percentile(loaded["small"], 99) / percentile(idle["small"], 99)
    slowest = max(alone["large"] + loaded["large"])
    return largest_table(runs) + [
        "",
        f"- The largest request: {limits.max_texts} texts x {limits.max_text_chars:,} characters ({body_bytes:,} "
        f"bytes), each post cut to {limits.max_text_tokens} tokens: {tokens:,.0f} tokens; "
        f"alone (no other client) {alone['large'][0]:.2f} s.",
        f"- Goal: the largest request within {GOAL_LARGEST_S:g} s: slowest (alone or beside them) {slowest:.2f} s: "
        f"{'met' if slowest <= GOAL_LARGEST_S else 'NOT met'}.",
        f"- Goal: small clients' p99 within {GOAL_P99_RATIO:g}x of the idle run: p99(loaded) / p99(idle) = "
        f"{ratio:.2f}: {'met' if ratio <= GOAL_P99_RATIO else 'NOT met'}.",
        f"- Limits: {', '.join(f'{key}={value}' for key, value in vars(limits).items())}.",
    ]


def write_largest(path: str, args: argparse.Namespace, load_average: float, seconds: float, lines: list[str]) -> None:
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"## {stamp}: {args.model}, template {args.template or 'the server default'}", "",
              f"Machine: {cpu}, nproc {len(os.sched_getaffinity(0))}, {platform.platform()}, torch "
              f"{version('torch')}; load average {load_average:.2f} at the start. Command: "
              f"`python {' '.join(sys.argv)}` ({args.small_clients} small clients, {args.large_clients} large, "
              f"{seconds:g} s per run, server threads {args.threads or 'torch default'}).", ""]
    if args.note:
        header += [args.note, ""]
    new_file = not Path(path).exists()
    with open(path, "a", encoding="utf-8") as file:
        if new_file:
            file.write("# The largest request `hatelens serve` allows, beside small clients "
                       "(`benchmarks/serve_load.py --scenario largest`, issue 14)\n\n")
        file.write("\n".join(header + lines) + "\n\n")


def _samples(url: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
            for sample in family.samples if not sample.labels}


@contextmanager
def _given(url: str):
    yield url.rstrip("/")


def _batch_totals(url: str) -> tuple[float, float]:
    samples = _samples(url)
    return samples.get("hatelens_batch_texts_sum", 0.0), samples.get("hatelens_batch_texts_count", 0.0)


if __name__ == "__main__":
    main()
