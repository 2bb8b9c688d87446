"""An LLM's scores fused with the MiniLM reference's (the mean of the two log-odds, equal weight), on validation
and on the functional suite, beside the LLM alone (issue 13: score stacking with the reference encoder).

    hatelens evaluate --backend reference --data data/validation.jsonl --output-dir /tmp/ref_val
    hatelens evaluate --backend reference --data suites/functional/hatelens_functional.csv --format hatecheck \
        --output-dir /tmp/ref_suite
    python benchmarks/fuse_reference.py --reference /tmp/ref_val/*/predictions.jsonl \
        --reference-suite /tmp/ref_suite/*/predictions.jsonl \
        --llm runs/<run>/03_finetuned_validation/predictions.jsonl runs/<run>/09_finetuned_functional_suite/predictions.jsonl

Each --llm names one adapter's validation predictions and, optionally, its suite predictions. Validation: ROC-AUC,
LGBTQ+ ROC-AUC, F1 at 0.5, the best F1 of any single threshold (read on validation itself: a ceiling) and the total
excess over the group budgets at 0.5 (seed_ensemble.figures). Suite: hate recall and non-hate accuracy at 0.5.
"""

import argparse

import numpy as np
from seed_ensemble import figures
from stacking_oof import load, logit


def aligned(llm_path: str, reference: dict[str, dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The LLM's rows (sorted by id), its log-odds and the reference's for the same rows."""
    rows = sorted(load(llm_path).values(), key=lambda row: row["id"])
    missing = [row["id"] for row in rows if reference.get(row["id"], {}).get("score") is None]
    if missing or any(row.get("score") is None for row in rows):
        raise SystemExit(f"{llm_path}: rows without a score in it or in the reference (e.g. {missing[:1]})")
    return (rows, logit(np.array([row["score"] for row in rows], dtype=float)),
            logit(np.array([reference[row["id"]]["score"] for row in rows], dtype=float)))


def suite_figures(rows: list[dict], log_odds: np.ndarray) -> str:
    hate = np.array([row["label"] == "hate" for row in rows])
    flagged = log_odds >= 0
    return f"{flagged[hate].mean():.3f} / {(~flagged[~hate]).mean():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the reference's validation predictions")
    parser.add_argument("--reference-suite", help="the reference's functional-suite predictions")
    parser.add_argument("--llm", nargs="+", action="append", required=True, metavar="PREDICTIONS",
                        help="an adapter's validation predictions [and its suite predictions]")
    args = parser.parse_args()
    reference = load(args.reference)
    suite_reference = load(args.reference_suite) if args.reference_suite else None
    names = ["ROC-AUC", "LGBTQ+ ROC-AUC", "F1 at 0.5", "best-threshold F1", "budget excess"]
    print("| adapter | scorer | " + " | ".join(names) + " | suite hate recall / non-hate accuracy |")
    print("|---|---|" + "---:|" * len(names) + "---|")
    for files in args.llm:
        rows, llm, ref = aligned(files[0], reference)
        y = np.array([row["label"] == "hate" for row in rows], dtype=int)
        groups = np.array([row["group"] for row in rows])
        suite = aligned(files[1], suite_reference) if len(files) > 1 and suite_reference else None
        for scorer, combine in (("LLM", lambda a, b: a), ("reference", lambda a, b: b),
                                ("fused", lambda a, b: (a + b) / 2)):
            values = figures(y, groups, combine(llm, ref))
            suite_cell = suite_figures(suite[0], combine(suite[1], suite[2])) if suite else ""
            print(f"| {files[0]} | {scorer} | " + " | ".join(f"{values[name]:.3f}" for name in names)
                  + f" | {suite_cell} |")


if __name__ == "__main__":
    main()
