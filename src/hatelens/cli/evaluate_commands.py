"""`hatelens baseline` and `hatelens evaluate`: score a dataset into a run folder.

    hatelens evaluate --model smollm2-135m --adapter runs/<train run>/adapter --data data/validation.jsonl
    hatelens evaluate ... --with-reference --reference-train data/train.jsonl   # + the MiniLM reference run
    hatelens evaluate --backend reference --reference-kind finetuned --data data/validation.jsonl  # MiniLM fine-tuned
    hatelens evaluate --base_model smollm2-135m --lora_adapter ADAPTER --data_file D --output_file results.json
"""

import argparse
from pathlib import Path

from hatelens.cli.options import add_model_options, add_overrides, model_values
from hatelens.config import EvalConfig, load_config
from hatelens.config.bounds import REFERENCE_KINDS
from hatelens.errors import ConfigError

EVAL_KEYS = ("data", "output_dir", "name", "format", "text_column", "label_column", "group_column",
             "skip_empty_texts", "max_samples",
             "seed", "threshold", "thresholds", "target_f1", "n_bootstrap")


def register(subparsers) -> None:
    for name, summary in (("baseline", "zero-shot evaluation of a model (no adapter)"),
                          ("evaluate", "evaluate a model, optionally with an adapter and thresholds")):
        parser = subparsers.add_parser(name, help=summary, description=summary)
        parser.add_argument("--config", help="YAML recipe (EvalConfig fields)")
        parser.add_argument("--data", "--data_file", "--data-file", dest="data", help="JSON, JSONL or CSV file")
        parser.add_argument("--output-dir", "--output_dir", dest="output_dir", help="where run folders go (runs)")
        parser.add_argument("--output-file", "--output_file", dest="output_file",
                            help="also write the results as one JSON file: metrics + every prediction")
        parser.add_argument("--name", help="run folder name suffix")
        parser.add_argument("--format", choices=("json", "jsonl", "csv", "hatecheck"))
        parser.add_argument("--text-column", "--text_column", dest="text_column")
        parser.add_argument("--label-column", "--label_column", dest="label_column")
        parser.add_argument("--group-column", "--group_column", dest="group_column")
        parser.add_argument("--skip-empty-texts", "--skip_empty_texts", dest="skip_empty_texts", action="store_true",
                            default=None, help="drop rows with empty text (recorded as a warning)")
        parser.add_argument("--max-samples", "--max_samples", dest="max_samples", type=int,
                            help="seeded sample stratified by label x group")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--threshold", type=float, help="decision threshold on P(hate) (0.5)")
        parser.add_argument("--thresholds", help="thresholds.json from `hatelens calibrate`")
        parser.add_argument("--target-f1", "--target_f1", dest="target_f1", type=float,
                            help="the 'target to beat' line (0.615)")
        add_model_options(parser)
        reference = parser.add_argument_group("reference classifier (MiniLM-L6, frozen or fully fine-tuned)")
        reference.add_argument("--with-reference", "--with_reference", dest="with_reference", action="store_true",
                               help="also score the same rows with the reference, into a run folder of its own")
        reference.add_argument("--reference-train", "--reference_train", dest="reference_train", metavar="FILE",
                               help="the reference's training file (model.reference_train, data/train.jsonl); "
                                    "never the data being scored")
        reference.add_argument("--reference-kind", "--reference_kind", dest="reference_kind",
                               choices=tuple(REFERENCE_KINDS),
                               help="model.reference_kind: " + "; ".join(f"{kind}: {name}" for kind, name in
                                                                         REFERENCE_KINDS.items()) + " (logistic)")
        add_overrides(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.set_defaults(handler=run_evaluate, command_name=name)


def build_config(args: argparse.Namespace) -> EvalConfig:
    values = {key: getattr(args, key) for key in EVAL_KEYS if getattr(args, key, None) is not None}
    values["model"] = model_values(args)
    for key in ("reference_train", "reference_kind"):
        if getattr(args, key) is not None:
            values["model"][key] = getattr(args, key)
    return load_config(EvalConfig, args.config, args.overrides, base=values)


def check_request(args: argparse.Namespace, config: EvalConfig) -> None:
    """Everything that would fail after the scoring, checked before it."""
    from hatelens.evaluation.results_file import check_results_path

    if args.command_name == "baseline" and config.model.adapter:
        raise ConfigError("baseline measures a model before fine-tuning: use `hatelens evaluate` with --adapter")
    if args.output_file:
        check_results_path(args.output_file)
    is_reference = config.model.backend == "reference"
    if args.with_reference and is_reference:
        raise ConfigError("--with-reference beside --backend reference: this run already is the reference")
    for flag, given in (("--reference-train", args.reference_train), ("--reference-kind", args.reference_kind)):
        if given and not (args.with_reference or is_reference):
            raise ConfigError(f"{flag} is about the reference classifier: add --with-reference "
                              "(or --backend reference)")
    if (args.with_reference or is_reference) and not Path(config.model.reference_train).is_file():
        raise ConfigError(f"reference training data {config.model.reference_train} not found; pass "
                          "--reference-train FILE (e.g. data/train.jsonl from `hatelens data split`)")


def run_evaluate(args: argparse.Namespace) -> int:
    from hatelens.evaluation.evaluate import evaluate, reference_config
    from hatelens.evaluation.results_file import write_results_file

    config = build_config(args)
    check_request(args, config)
    result = evaluate(config, progress=not args.quiet)
    reference = None
    if args.with_reference:  # every process of a multi-process run takes part, as in the run above
        reference = evaluate(reference_config(config, config.model.reference_train, config.model.reference_kind),
                             progress=not args.quiet)
    if not result.main_process:  # one of several processes: the main one reports
        return 0
    print(result.summary)
    if result.resumed_rows:
        print(f"Resumed: {result.resumed_rows} predictions came from the interrupted attempt")
    print(f"Wrote:  {result.run_dir}/  (predictions.jsonl, metrics.json, summary.txt, config.yaml, manifest.json)")
    if args.output_file:
        print(f"Wrote:  {write_results_file(result, config, args.output_file)}  (metrics + every prediction)")
    if reference is not None:
        kind = REFERENCE_KINDS[config.model.reference_kind]
        print(f"\nReference ({kind}, trained on {config.model.reference_train}):")
        print(reference.summary)
        print(f"Wrote:  {reference.run_dir}/  (compare or report with --reference {reference.run_dir})")
    return 0
