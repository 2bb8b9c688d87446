"""`hatelens data split | stats | build`: the dataset before any model sees it."""

import argparse
import json
from pathlib import Path

from hatelens.errors import DataError

SEED_VALIDATION_ROWS = 545  # the earlier project's split of unified_train.json: 3,083 / 545


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="split, inspect or build the dataset")
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    split = commands.add_parser("split", help="seeded train/validation split stratified by label x group")
    split.add_argument("--input", default="data/unified/unified_train.json")
    split.add_argument("--output-dir", "--output_dir", dest="output_dir", default="data")
    split.add_argument("--validation-rows", type=int, default=SEED_VALIDATION_ROWS)
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--test", default="data/unified/unified_test.json",
                       help="the test split, recorded in splits.json (when the file exists) so calibrate refuses it")
    split.set_defaults(handler=run_split)

    stats = commands.add_parser("stats", help="counts per split and texts shared between splits")
    stats.add_argument("files", nargs="*", help="default: data/unified/unified_{train,val,test}.json")
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    stats.set_defaults(handler=run_stats)

    build = commands.add_parser("build", help="rebuild the unified splits from local copies of the public sources")
    build.add_argument("--hatexplain", required=True, help="HateXplain dataset.json")
    build.add_argument("--toxigen", required=True, help="ToxiGen annotated CSV (or a folder holding it)")
    build.add_argument("--output-dir", "--output_dir", dest="output_dir", default="data/unified")
    build.add_argument("--seed", type=int, default=42)
    build.set_defaults(handler=run_build)


def run_split(args: argparse.Namespace) -> int:
    from hatelens import data
    from hatelens.data.split_record import write_split_record

    loaded = data.load_examples(args.input)
    examples = loaded.examples
    if not 0 < args.validation_rows < len(examples):
        raise DataError(f"--validation-rows {args.validation_rows} must be between 1 and {len(examples) - 1}")
    train, validation = data.split_examples(examples, validation_fraction=args.validation_rows / len(examples),
                                            seed=args.seed)
    output = Path(args.output_dir)
    data.write_jsonl_files({output / "train.jsonl": train, output / "validation.jsonl": validation})
    roles = {"train": (output / "train.jsonl", train), "validation": (output / "validation.jsonl", validation)}
    if Path(args.test).is_file():
        roles["test"] = (Path(args.test), data.load_examples(args.test).examples)
    record = write_split_record(output, roles)
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    print(f"{len(train)} training rows  -> {output / 'train.jsonl'}")
    print(f"{len(validation)} validation rows -> {output / 'validation.jsonl'}")
    print(f"split roles and hashes -> {record}" + ("" if "test" in roles else f"  (no test split: {args.test} not found)"))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from hatelens import data

    files = args.files or [f"data/unified/unified_{name}.json" for name in ("train", "val", "test")]
    splits, warnings = {}, {}
    stems = [Path(file).stem for file in files]
    for file, stem in zip(files, stems):
        # stats describe files as they are: empty texts are reported, not fatal
        loaded = data.load_examples(file, skip_empty_texts=True)
        name = stem if stems.count(stem) == 1 else str(file)  # two files named alike: keep both, by path
        if name in splits:
            raise DataError(f"{file}: given twice; name each file once")
        splits[name] = loaded.examples
        warnings[name] = loaded.warnings
    stats = data.split_stats(splits)
    if args.json:
        print(json.dumps({"stats": stats, "warnings": warnings}, indent=2))
        return 0
    print(format_split_stats(stats))
    for name, found in warnings.items():
        for warning in found:
            print(f"warning ({name}): {warning}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from hatelens.data import sources

    written = sources.build_unified(Path(args.hatexplain), Path(args.toxigen), Path(args.output_dir), seed=args.seed)
    for path in written:
        print(f"wrote {path}")
    return 0


def format_split_stats(stats: dict) -> str:
    """Counts per split, then the texts each pair of splits shares."""
    lines = [f"{'split':<16}{'rows':>6}{'hate':>6}{'normal':>8}  groups"]
    for name, counts in stats["splits"].items():
        labels = counts["by_label"]
        groups = ", ".join(f"{group} {n}" for group, n in sorted(counts["by_group"].items()))
        lines.append(f"{name:<16}{counts['examples']:>6}{labels.get('hate', 0):>6}{labels.get('normal', 0):>8}  {groups}")
    lines += ["", "texts shared between splits (normalised: case and whitespace ignored):"]
    for overlap in stats["overlaps"]:
        first, second = overlap["splits"]
        lines.append(f"  {first} & {second}: {overlap['shared_texts']}")
    return "\n".join(lines)
