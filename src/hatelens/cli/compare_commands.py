"""`hatelens compare | calibrate | report | suite build`: the last steps of the validation workflow.

    hatelens compare runs/<baseline> runs/<fine-tuned> --training-summary runs/<train run>   # exit 0: all criteria pass
    hatelens calibrate runs/<validation run> --max-group-fpr 0.35                             # writes thresholds.json
    hatelens evaluate --adapter ... --thresholds runs/<validation run>/thresholds.json
    hatelens report runs/<comparison> --reference runs/<reference run>
    hatelens suite build                                 # regenerate suites/functional/hatelens_functional.csv
"""

import argparse
import json
from pathlib import Path

from hatelens import trackers
from hatelens.cli.options import add_overrides
from hatelens.errors import DataError

EXIT_CRITERIA_FAILED = 1


def register(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="baseline vs fine-tuned run: deltas, significance, criteria",
                                    description="Compare two runs of the same examples; exit 0 when every success "
                                                "criterion passes, 1 when one fails (a CI gate).")
    compare.add_argument("baseline_run")
    compare.add_argument("finetuned_run")
    compare.add_argument("--criteria", help="criteria YAML (default: the seed's, configs/criteria/default.yaml)")
    compare.add_argument("--report-to", "--report_to", dest="report_to", nargs="+", default=["none"],
                         help="also log the verdict to: tensorboard | mlflow | wandb | none")
    compare.add_argument("--output-dir", "--output_dir", dest="output_dir",
                         help="where comparison.json, cases.csv and the report go (default: a new folder beside "
                              "the baseline run)")
    compare.add_argument("--training-summary", "--training_summary", dest="training_summary",
                         help="training_summary.json of the fine-tuning run (or its run folder)")
    compare.add_argument("--reference", action="append", default=[],
                         help="a --backend reference run on the same data, shown in the report (repeatable: "
                              "both reference kinds)")
    compare.add_argument("--n-bootstrap", "--n_bootstrap", dest="n_bootstrap", type=int, default=1000)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--no-report", dest="report", action="store_false", help="skip report.md / report.html")
    add_overrides(compare)
    compare.set_defaults(handler=run_compare)

    calibrate = subparsers.add_parser("calibrate", help="decision thresholds from a validation run",
                                      description="Pick thresholds on a validation run's scores; write thresholds.json "
                                                  "for `hatelens evaluate --thresholds`.")
    calibrate.add_argument("run", help="a finished score-mode run on the validation split (never the test split)")
    objective = calibrate.add_mutually_exclusive_group()
    objective.add_argument("--objective", choices=("f1",), help="one global threshold with the best F1 (default)")
    objective.add_argument("--max-group-fpr", "--max_group_fpr", dest="max_group_fpr", type=float,
                           help="per-group thresholds, best F1 with every group's FPR at or under this cap")
    objective.add_argument("--equalize", choices=("fpr",), help="per-group thresholds giving every group the same FPR "
                                                               "(Fairlearn ThresholdOptimizer)")
    calibrate.add_argument("--max-group-fnr", "--max_group_fnr", dest="max_group_fnr", type=float,
                           help="with it, per-group thresholds keep every group's FPR (--max-group-fpr, default 0.35) "
                                "and FNR within budget; a group no threshold fits is named")
    calibrate.add_argument("--output", help="thresholds file to write (default: RUN/thresholds.json)")
    calibrate.set_defaults(handler=run_calibrate)

    report = subparsers.add_parser("report", help="report.md + report.html of a comparison folder")
    report.add_argument("comparison_dir", help="a folder written by `hatelens compare`")
    report.add_argument("--reference", action="append", default=[],
                        help="a --backend reference run on the same data (repeatable)")
    report.add_argument("--run", action="append", default=[], metavar="LABEL=RUN_DIR",
                        help="another run to list (repeatable), e.g. 'fine-tuned, calibrated=runs/x'")
    report.add_argument("--thresholds", action="append", default=[], metavar="FILE",
                        help="a thresholds.json from `hatelens calibrate` whose F1 cost to report (repeatable)")
    report.add_argument("--training-summary", "--training_summary", dest="training_summary")
    report.set_defaults(handler=run_report)

    suite = subparsers.add_parser("suite", help="functional test suites")
    suite_commands = suite.add_subparsers(dest="suite_command", metavar="ACTION", required=True)
    build = suite_commands.add_parser("build", help="regenerate the suite CSV from its templates")
    build.add_argument("--templates", default="suites/functional/templates.yaml")
    build.add_argument("--output", default="suites/functional/hatelens_functional.csv")
    build.set_defaults(handler=run_suite_build)


def run_compare(args: argparse.Namespace) -> int:
    from hatelens.evaluation.compare import compare
    from hatelens.evaluation.criteria import load_criteria
    from hatelens.report.writer import write_report

    training_summary = read_training_summary(args.training_summary)
    result = compare(args.baseline_run, args.finetuned_run, criteria=load_criteria(args.criteria, args.overrides),
                     training_summary=training_summary, output_dir=args.output_dir,
                     n_bootstrap=args.n_bootstrap, seed=args.seed)
    trackers.log(args.report_to, result.output_dir, result.output_dir.name,
                 trackers.comparison_figures(result.comparison, result.passed),
                 params={"baseline_run": args.baseline_run, "finetuned_run": args.finetuned_run})
    print((result.output_dir / "summary.txt").read_text(encoding="utf-8"), end="")
    written = ["comparison.json", "cases.csv", "summary.txt"]
    if args.report:
        write_report(result.output_dir, result.comparison, args.baseline_run, args.finetuned_run, training_summary,
                     reference_runs=args.reference)
        written += ["report.md", "report.html"]
    print(f"Wrote:  {result.output_dir}/  ({', '.join(written)})")
    return 0 if result.passed else EXIT_CRITERIA_FAILED


def run_calibrate(args: argparse.Namespace) -> int:
    from hatelens.evaluation.calibrate import calibrate
    from hatelens.report.formatting import num

    if args.max_group_fnr is not None:
        caps = {"max_group_fnr": args.max_group_fnr}
        if args.max_group_fpr is not None:
            caps["max_group_fpr"] = args.max_group_fpr
        result = calibrate(args.run, objective="group_budget", output_path=args.output, **caps)
    elif args.max_group_fpr is not None:
        result = calibrate(args.run, objective="max_group_fpr", max_group_fpr=args.max_group_fpr,
                           output_path=args.output)
    elif args.equalize:
        result = calibrate(args.run, objective="equalize_fpr", output_path=args.output)
    else:
        result = calibrate(args.run, objective="f1", output_path=args.output)
    thresholds = result.details
    print(f"Objective:       {thresholds['objective']}  ({thresholds['method']})")
    print(f"Threshold:       {thresholds['threshold']:.4f} (global)")
    print(f"Validation F1:   {thresholds['validation_f1']:.4f}  (best unconstrained {thresholds['unconstrained_f1']:.4f},"
          f" F1 cost {thresholds['f1_cost']:.4f}; as evaluated {thresholds['run_f1']:.4f})")
    print(f"{'group':<14}{'n':>5}{'threshold':>11}{'FPR':>8}{'FNR':>8}")
    for group, entry in thresholds["validation_per_group"].items():
        print(f"{group:<14}{entry['n']:>5}{entry['threshold']:>11.4f}{num(entry['fpr']):>8}{num(entry['fnr']):>8}")
    if thresholds.get("budget_unmet"):
        print(f"Budget not met on validation by any threshold for: {', '.join(thresholds['budget_unmet'])} "
              "(each gets the threshold that misses it by least)")
    print(f"Wrote:  {result.path}  (use it: hatelens evaluate ... --thresholds {result.path})")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from hatelens.evaluation.compare import load_comparison
    from hatelens.report.writer import write_report

    comparison = load_comparison(args.comparison_dir)
    extra_runs = {}
    for item in args.run:
        label, separator, folder = item.rpartition("=")
        if not separator or not label:
            raise DataError(f"--run {item!r} is not LABEL=RUN_DIR; e.g. --run 'fine-tuned, calibrated=runs/x'")
        extra_runs[label] = folder
    training_summary = read_training_summary(args.training_summary) if args.training_summary else (
        comparison.get("training_summary"))
    md_path, html_path = write_report(
        args.comparison_dir, comparison, comparison["baseline"]["run_dir"], comparison["finetuned"]["run_dir"],
        training_summary, reference_runs=args.reference, extra_runs=extra_runs,
        calibrations=[read_json(path, "thresholds file") for path in args.thresholds])
    print(f"Wrote:  {md_path}  {html_path}")
    return 0


def run_suite_build(args: argparse.Namespace) -> int:
    from hatelens.data.suites import build_suite, write_suite

    cases = build_suite(args.templates)
    path = write_suite(cases, args.output)
    functionalities = sorted({case.functionality for case in cases})
    print(f"{len(cases)} cases, {len(functionalities)} functionalities -> {path}")
    print(f"Evaluate: hatelens evaluate --data {path} --format hatecheck")
    return 0


def read_training_summary(path: str | None) -> dict | None:
    """training_summary.json, given as the file or as the training run folder holding it."""
    if path is None:
        return None
    file = Path(path)
    if file.is_dir():
        file = file / "training_summary.json"
    return read_json(file, "training summary")


def read_json(path: str | Path, what: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} {file} not found; check the path")
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise DataError(f"{file}: expected a JSON object, the {what}")
    return value
