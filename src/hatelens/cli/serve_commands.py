"""`hatelens serve` (the classifier over HTTP, every prediction logged) and `hatelens monitor` (the log
read back: per-group rates, feedback FPR/FNR, drift, alerts; exit code 1 when an alert fires)."""

import argparse
import dataclasses
import sys

from hatelens.cli.options import add_model_options, add_overrides, model_values
from hatelens.config import MonitorConfig, ServeConfig, load_config

EXIT_ALERT = 1


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="serve the classifier over HTTP (POST /v1/classify)",
                                  description="Serve the classifier over HTTP; see docs/serving.md.")
    serve.add_argument("--config", help="YAML recipe (ServeConfig fields)")
    serve.add_argument("--host", help="interface to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, help="port (8000)")
    serve.add_argument("--db", help="SQLite prediction log (predictions.sqlite)")
    serve.add_argument("--thresholds", help="thresholds.json from `hatelens calibrate`")
    serve.add_argument("--threshold", type=float, help="decision threshold on P(hate) without a thresholds file (0.5)")
    serve.add_argument("--log-text", "--log_text", dest="log_text", action="store_true", default=None,
                       help="store the texts in the log (default: only their SHA-256)")
    add_model_options(serve)
    add_overrides(serve)
    serve.set_defaults(handler=run_serve)

    monitor = subparsers.add_parser("monitor", help="per-window rates, FPR/FNR and drift from the prediction log",
                                    description="Report on the prediction log; exit code 1 when an alert fires.")
    monitor.add_argument("--config", help="YAML recipe (MonitorConfig fields)")
    monitor.add_argument("--db", help="SQLite prediction log (predictions.sqlite)")
    monitor.add_argument("--reference", help="run folder whose scores are the expected distribution (drift)")
    monitor.add_argument("--window", help="window length: 30m, 6h, 1d (default), 1w")
    monitor.add_argument("--since", help="only predictions newer than this: 7d, or a date like 2025-01-31")
    monitor.add_argument("--format", choices=("md", "html"), default="md", help="report format (md)")
    monitor.add_argument("--output", help="write the report here instead of printing it")
    add_overrides(monitor)
    monitor.set_defaults(handler=run_monitor)


def _values(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def run_serve(args: argparse.Namespace) -> int:
    from hatelens import extras

    extras.require("serve", "hatelens serve")
    import uvicorn

    from hatelens.backends import BACKENDS, create_backend
    from hatelens.errors import ConfigError
    from hatelens.evaluation.thresholds import load_thresholds
    from hatelens.serving.app import create_app

    values = _values(args, ("host", "port", "db", "thresholds", "threshold", "log_text"))
    values["model"] = model_values(args)
    config = load_config(ServeConfig, args.config, args.overrides, base=values)
    if config.model.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {config.model.backend!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    # A served batch mixes short and long posts: its forward passes are bounded by padded tokens (the batch
    # budget unless the model config sets its own), so no short post is padded to a long one's width.
    model = config.model
    if model.max_batch_tokens is None:
        model = dataclasses.replace(model, max_batch_tokens=config.limits.max_batch_tokens)
    app = create_app(
        loader=lambda: create_backend(model.backend, model),
        thresholds=load_thresholds(config.thresholds, config.threshold), db_path=config.db,
        api_key_env=config.api_key_env, limits=config.limits, log_text=config.log_text,
        metric_groups=[group.strip() for group in config.metric_groups.split(",") if group.strip()],
    )
    # The model loads after the port opens: /healthz answers 503 until it is ready.
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0


def run_monitor(args: argparse.Namespace) -> int:
    from hatelens import runs
    from hatelens.serving import monitor

    config = load_config(MonitorConfig, args.config, args.overrides,
                         base=_values(args, ("db", "reference", "window", "since")))
    report = monitor.monitor(config)
    text = monitor.render_html(report) if args.format == "html" else monitor.render_markdown(report)
    if args.output:
        runs.write_atomic(args.output, text)
        print(f"wrote {args.output}: {len(report.windows)} window(s), {len(report.alerts)} alert(s)")
    else:
        print(text, end="")
    for alert in report.alerts:
        print(f"ALERT {alert}", file=sys.stderr)
    return EXIT_ALERT if report.alerts else 0
