"""`hatelens run`: the whole validation from one recipe (the README's main command)."""

import argparse

from hatelens import extras
from hatelens.cli.options import add_overrides
from hatelens.config import RunConfig, load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="baseline -> fine-tune -> calibrate -> test -> compare -> report, resumable",
        description="The whole validation from one recipe. Re-run the same command after an interruption: "
                    "finished steps are kept.")
    parser.add_argument("--config", default="configs/run/default.yaml", help="run recipe (configs/run/*.yaml)")
    parser.add_argument("--quick", action="store_true",
                        help="small stratified samples and the quick_test recipe: checks the pipeline in minutes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overrides(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    extras.require("train", "hatelens run (it fine-tunes)")
    from hatelens.pipeline import quick_config, run_pipeline

    config = load_config(RunConfig, args.config, args.overrides)
    if args.quick:
        config = quick_config(config)
    result = run_pipeline(config, progress=not args.quiet, quick=args.quick)
    verdict = result.verdict
    print(f"\nRun folder: {result.run_dir}")
    for label, criteria in (("default threshold 0.5", verdict.criteria),
                            ("calibrated thresholds", verdict.criteria_calibrated)):
        print(f"\nCriteria ({label}):")
        for criterion in criteria or []:
            print(f"  {criterion['status']:<5} {criterion['name']}: {criterion.get('figure')} "
                  f"(target {criterion.get('target')})")
    print(f"\nWall time: {verdict.wall_s / 60:.1f} min"
          f"{' (this invocation: it resumed an earlier one, whose finished steps are not counted)' if verdict.resumed else ''}")
    print(f"Report: {result.report_html}")
    print(f"Verdict: {'PASS' if result.passed else 'FAIL'} (calibrated: "
          f"{'PASS' if verdict.passed_calibrated else 'FAIL'})")
    return 0 if result.passed else 1
