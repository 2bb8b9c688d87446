"""Training files for issue 13's side experiments (docs/quality.md, 2026-12-03 eleventh session); written whole.

    python benchmarks/training_files.py plus-val data/train_plus_val.jsonl
        data/train.jsonl + the rows of data/unified/unified_val.json (the source project's validation split, in no
        hatelens split) whose text is in no other split: configs/sweeps/quality_gpu_more_data.yaml trains on it
    python benchmarks/training_files.py augmented /tmp/train_aug.jsonl [--no-counterfactual]
        data/train.jsonl + make run's augmentation (counterfactual swaps, 200 neutral posts, 50 counter-speech posts
        and 100 negation frames a group, seed 0): a reference trained on what the LLM trains on
        (hatelens evaluate --backend reference model.reference_train=/tmp/train_aug.jsonl ...)
"""

import argparse

from hatelens.data import load_examples, normalize_text, write_jsonl
from hatelens.data.augment import augment


def plus_validation(output: str) -> None:
    train = load_examples("data/train.jsonl").examples
    held = {normalize_text(example.text) for path in ("data/validation.jsonl", "data/unified/unified_test.json")
            for example in load_examples(path).examples}
    seen = {normalize_text(example.text) for example in train}
    extra = load_examples("data/unified/unified_val.json", skip_empty_texts=True).examples
    kept = [example for example in extra if normalize_text(example.text) not in held | seen]
    write_jsonl(list(train) + kept, output)
    print(f"{len(train)} training rows + {len(kept)} of unified_val's {len(extra)} non-empty rows -> {output}")


def augmented(output: str, counterfactual: bool) -> None:
    train = load_examples("data/train.jsonl").examples
    rows, counts = augment(train, counterfactual=counterfactual, neutral_per_group=200, balance_labels=False, seed=0,
                           counter_speech_per_group=50, negation_per_group=100)
    write_jsonl(rows, output)
    print(f"{len(train)} training rows + {counts} -> {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["plus-val", "augmented"])
    parser.add_argument("output")
    parser.add_argument("--no-counterfactual", action="store_true")
    args = parser.parse_args()
    if args.kind == "plus-val":
        plus_validation(args.output)
    else:
        augmented(args.output, counterfactual=not args.no_counterfactual)


if __name__ == "__main__":
    main()
