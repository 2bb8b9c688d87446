"""calibrate(): thresholds from a validation run, applied by evaluate, with their F1 cost."""

import json

import numpy as np
import pytest
from fixtures import LexiconClassifier, make_run, write_dataset

from hatelens.cli import main
from hatelens.errors import ConfigError
from hatelens.evaluation.calibrate import calibrate, candidate_thresholds
from hatelens.evaluation.metrics import binary_rates

GROUPS = ("lgbtq", "mexican", "middle_east")


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """A validation run of the lexicon classifier, gentle enough that thresholds matter."""
    folder = tmp_path_factory.mktemp("calibrate")
    data = write_dataset(folder / "validation.jsonl", n=120)
    run = make_run(data, folder / "runs", LexiconClassifier(steepness=0.4))
    return {"data": data, "run": run, "folder": folder}


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def arrays(run_dir):
    rows = rows_of(run_dir)
    return (np.array([row["label"] == "hate" for row in rows], dtype=int), np.array([row["score"] for row in rows]),
            np.array([row["group"] for row in rows]))


def apply(thresholds_path, validation, tmp_path):
    """Evaluate the validation data again with the thresholds: the figures a user would get."""
    run = make_run(validation["data"], tmp_path / "applied", LexiconClassifier(steepness=0.4),
                   thresholds=str(thresholds_path))
    return json.loads((run / "metrics.json").read_text())


def test_f1_threshold_is_the_best_and_evaluate_reproduces_its_f1(validation, tmp_path):
    result = calibrate(validation["run"], objective="f1", output_path=tmp_path / "thresholds.json")
    y_true, scores, _ = arrays(validation["run"])
    # every distinct decision: "hate from this score up", for each score, and "nothing is hate"
    best = max(binary_rates(y_true, (scores >= t).astype(int))["f1"] or 0 for t in [*scores, np.inf])
    assert result.details["validation_f1"] == pytest.approx(best)
    assert result.details["f1_cost"] == 0
    assert result.details["per_group"] == {}
    assert result.details["validation_f1"] > result.details["run_f1"]  # better than the 0.5 it was run at
    applied = apply(result.path, validation, tmp_path)
    assert applied["f1"] == pytest.approx(result.details["validation_f1"])
    assert applied["run"]["thresholds"]["threshold"] == result.details["threshold"]


def test_group_fpr_cap_holds_in_every_group(validation, tmp_path):
    result = calibrate(validation["run"], objective="max_group_fpr", max_group_fpr=0.05,
                       output_path=tmp_path / "capped.json")
    thresholds = result.details
    applied = apply(result.path, validation, tmp_path)
    for group in GROUPS:
        assert applied["per_group"][group]["fpr"] <= 0.05
        assert thresholds["validation_per_group"][group]["fpr"] == applied["per_group"][group]["fpr"]
    assert applied["f1"] == pytest.approx(thresholds["validation_f1"])
    assert thresholds["f1_cost"] == pytest.approx(thresholds["unconstrained_f1"] - thresholds["validation_f1"])
    unconstrained = calibrate(validation["run"], objective="f1", output_path=tmp_path / "f1.json").details
    assert max(entry["fpr"] for entry in unconstrained["validation_per_group"].values()) > 0.05  # the cap binds
    # at least as good as the best single threshold that meets the cap in every group
    y_true, scores, groups = arrays(validation["run"])
    feasible = []
    for threshold in candidate_thresholds(scores):
        predicted = (scores >= threshold).astype(int)
        if all(binary_rates(y_true[groups == g], predicted[groups == g])["fpr"] <= 0.05 for g in GROUPS):
            feasible.append(binary_rates(y_true, predicted)["f1"] or 0)
    assert thresholds["validation_f1"] >= max(feasible) - 1e-12


def test_equalized_fpr_brings_group_fprs_together(validation, tmp_path):
    result = calibrate(validation["run"], objective="equalize_fpr", output_path=tmp_path / "equal.json")
    fprs = [entry["fpr"] for entry in result.details["validation_per_group"].values()]
    y_true, _, groups = arrays(validation["run"])
    smallest_group_normals = min(int(np.sum((groups == g) & (y_true == 0))) for g in GROUPS)
    assert max(fprs) - min(fprs) <= 1 / smallest_group_normals + 1e-12  # one row of the smallest group
    assert set(result.details["per_group"]) == set(GROUPS)
    # the cost is measured against the best single threshold; per-group thresholds may even beat it
    assert result.details["f1_cost"] == pytest.approx(
        result.details["unconstrained_f1"] - result.details["validation_f1"])
    assert "ThresholdOptimizer" in result.details["method"]


def refused_message(run, data_file, test_file) -> str:
    return (f"{run} was scored on {data_file}, which holds the test split {test_file}: thresholds tuned on test data "
            "make test figures meaningless; calibrate a run on data/validation.jsonl instead")


def test_data_split_records_roles_and_a_renamed_copy_of_the_test_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "pool.jsonl", n=60)
    (tmp_path / "heldout").mkdir()
    test_file = write_dataset(tmp_path / "heldout" / "final.jsonl", n=30, start=100)
    assert main(["data", "split", "--input", "pool.jsonl", "--validation-rows", "12", "--test", str(test_file)]) == 0
    record = json.loads((tmp_path / "data" / "splits.json").read_text())["splits"]
    assert set(record) == {"train", "validation", "test"} and record["test"]["file"] == str(test_file)
    assert (record["train"]["n"], record["validation"]["n"], record["test"]["n"]) == (48, 12, 30)
    copy = tmp_path / "data" / "more_validation.jsonl"  # a renamed copy of the test split, beside splits.json
    copy.write_bytes(test_file.read_bytes())
    run = make_run(copy, tmp_path / "runs", LexiconClassifier())
    with pytest.raises(ConfigError) as error:
        calibrate(run)
    assert str(error.value) == refused_message(run, copy, test_file)
    assert not (run / "thresholds.json").exists()
    sampled = make_run(copy, tmp_path / "sampled", LexiconClassifier(), max_samples=20)  # same file, fewer rows
    with pytest.raises(ConfigError, match="which holds the test split"):
        calibrate(sampled)
    test_file.unlink()  # the hash recorded in splits.json still knows it
    with pytest.raises(ConfigError, match="which holds the test split"):
        calibrate(run)
    # a file merely named like a test split, with other examples, is calibrated on
    contest = write_dataset(tmp_path / "data" / "contest_validation.jsonl", n=30, start=300)
    assert calibrate(make_run(contest, tmp_path / "contest", LexiconClassifier())).thresholds is not None


def test_a_copy_of_the_shipped_test_split_is_refused_by_its_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [json.loads(line) for line in write_dataset(tmp_path / "rows.jsonl", n=30).read_text().splitlines()]
    shipped = tmp_path / "data" / "unified" / "unified_test.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_text(json.dumps(rows))
    (tmp_path / "elsewhere").mkdir()
    copy = write_dataset(tmp_path / "elsewhere" / "validation.jsonl", n=30)  # the same examples, another name
    run = make_run(copy, tmp_path / "runs", LexiconClassifier())
    with pytest.raises(ConfigError) as error:
        calibrate(run)
    assert str(error.value) == refused_message(run, copy, "data/unified/unified_test.json")
    named = write_dataset(tmp_path / "elsewhere" / "unified_test_like_contest.jsonl", n=30, start=500)
    assert calibrate(make_run(named, tmp_path / "named", LexiconClassifier())).thresholds is not None


def test_a_run_without_scores_is_refused(validation, tmp_path):
    run = make_run(validation["data"], tmp_path / "runs", LexiconClassifier(mode="generate"))
    with pytest.raises(ConfigError, match="120 of 120 rows have no score .generate mode.; calibration needs a score"):
        calibrate(run)


def test_cli_writes_thresholds_json_inside_the_run_by_default(validation, capsys):
    assert main(["calibrate", str(validation["run"]), "--max-group-fpr", "0.2"]) == 0
    written = json.loads((validation["run"] / "thresholds.json").read_text())
    assert written["objective"] == "max_group_fpr" and written["max_group_fpr"] == 0.2
    assert written["source_run"] == str(validation["run"])
    assert f"Wrote:  {validation['run'] / 'thresholds.json'}" in capsys.readouterr().out


def test_cli_objectives_are_mutually_exclusive(validation, capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", str(validation["run"]), "--objective", "f1", "--equalize", "fpr"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_group_budget_keeps_every_group_within_fpr_and_fnr_or_names_it():
    """Per-group thresholds within an FPR and an FNR budget; a group no threshold can fit is named, not hidden."""
    from hatelens.evaluation.calibrate import budget_thresholds
    from hatelens.evaluation.metrics import binary_rates

    rng = np.random.default_rng(3)
    groups = np.array(["a"] * 200 + ["b"] * 200)
    y_true = rng.integers(0, 2, 400)
    separable = np.where(y_true == 1, rng.uniform(0.5, 1.0, 400), rng.uniform(0.0, 0.6, 400))
    scores = np.where(groups == "a", separable, rng.uniform(0, 1, 400))  # group b: scores carry no signal
    thresholds, unmet = budget_thresholds(y_true, scores, groups, fpr_cap=0.2, fnr_cap=0.25)
    assert unmet == ["b"]  # no threshold on noise gives FPR <= 0.2 and FNR <= 0.25 at once
    rows_a = groups == "a"
    rates_a = binary_rates(y_true[rows_a], (scores[rows_a] >= thresholds["a"]).astype(int))
    assert rates_a["fpr"] <= 0.2 and rates_a["fnr"] <= 0.25
    rows_b = groups == "b"
    rates_b = binary_rates(y_true[rows_b], (scores[rows_b] >= thresholds["b"]).astype(int))
    misses = []  # the miss of every threshold group b could take: it got the smallest
    for threshold in np.unique(scores[rows_b]):
        rates = binary_rates(y_true[rows_b], (scores[rows_b] >= threshold).astype(int))
        misses.append(max(rates["fpr"] - 0.2, rates["fnr"] - 0.25))
    assert max(rates_b["fpr"] - 0.2, rates_b["fnr"] - 0.25) == pytest.approx(min(misses))
