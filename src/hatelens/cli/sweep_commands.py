"""`hatelens sweep`: train a list or grid of recipe variants, score each on validation, pick a winner."""

import argparse

from hatelens.cli.options import add_overrides
from hatelens.errors import ConfigError


def register(subparsers) -> None:
    summary = "train recipe variants (a list or grid), score each on validation, pick a winner under a rule"
    parser = subparsers.add_parser(
        "sweep", help=summary,
        description=summary + ". Re-run the same command after an interruption: finished cells are reused.")
    parser.add_argument("--config", required=True, help="sweep file: a shipped name (quality, quick) or a path")
    parser.add_argument("--quick", action="store_true",
                        help="every cell trains one step on 16 rows and is scored on 16: checks the sweep in minutes")
    parser.add_argument("--workers", type=int, default=1,
                        help="train this many cells at once, each in its own process (a GPU fits several small "
                             "models; on a 2-core CPU keep 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overrides(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hatelens.sweep import load_sweep, plan_cells, run_sweep

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected 1 or more")
    config = load_sweep(args.config, args.overrides)
    cells = plan_cells(config, quick=args.quick)  # a bad cell fails here, before anything trains
    print(f"Sweep {config.name}: {len(cells)} cell(s) from {config.recipe}")
    result = run_sweep(config, quick=args.quick, progress=not args.quiet, workers=args.workers)
    print()
    print(result.markdown)
    print(f"Wrote: {result.sweep_dir}/sweep.md, sweep.json (cells/ holds each cell's training and validation runs)")
    return 0
