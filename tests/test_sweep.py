"""`hatelens sweep`: cells from a list and a grid, the winner rule, the table, resuming, the CLI."""

import json

import pytest
from fixtures import separable_rows, write_jsonl

from hatelens import resources
from hatelens.cli import main
from hatelens.errors import ConfigError
from hatelens.sweep import SweepConfig, SweepRule, load_sweep, plan_cells, run_sweep
from hatelens.sweep.table import as_overrides, excess, pick_winner, violations

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]
RULE = SweepRule(metric="f1", max_group_fpr=0.2, max_group_fnr=0.25, groups=["lgbtq", "mexican"])


def row(name: str, f1: float, fpr: float = 0.1, fnr: float = 0.1, mexican_fnr: float = 0.1) -> dict:
    return {"name": name, "f1": f1, "roc_auc": 0.5, "per_group": {
        "lgbtq": {"fpr": fpr, "fnr": fnr}, "mexican": {"fpr": 0.1, "fnr": mexican_fnr}}}


@pytest.mark.parametrize("name", resources.shipped("sweeps"))
def test_every_shipped_sweep_plans_distinct_cells(name):
    cells = plan_cells(load_sweep(name))
    assert len(cells) >= 2
    assert len({cell.identity for cell in cells}) == len(cells)  # no two cells train the same recipe


def test_the_winner_is_the_best_f1_within_every_budget():
    rows = [row("best but unfair", 0.9, fpr=0.3), row("fair", 0.7), row("fairer, worse", 0.6)]
    winner, met = pick_winner(rows, RULE)
    assert (winner["name"], met) == ("fair", True)
    assert violations(rows[0], RULE) == ["lgbtq FPR 0.300 > 0.20"]


def test_without_a_fair_cell_the_smallest_excess_wins_and_says_so():
    rows = [row("far", 0.9, fpr=0.5), row("near", 0.6, fnr=0.3), row("near, better", 0.7, mexican_fnr=0.3)]
    winner, met = pick_winner(rows, RULE)
    assert (winner["name"], met) == ("near, better", False)
    assert excess(rows[1], RULE) == pytest.approx(0.05)


def test_a_missing_group_breaks_the_budget():
    lonely = {"name": "x", "f1": 0.9, "per_group": {"lgbtq": {"fpr": 0.0, "fnr": None}}}
    assert violations(lonely, RULE) == ["lgbtq FNR undefined (no rows)", "mexican FPR undefined (no rows)",
                                        "mexican FNR undefined (no rows)"]


def test_overrides_read_back_as_the_same_values():
    assert as_overrides({"learning_rate": 2e-5, "lora": {"r": 16, "target_modules": ["q_proj"]}, "name": None}) == [
        "learning_rate=2.0e-05", "lora.r=16", "lora.target_modules=[q_proj]", "name=null"]


@pytest.fixture
def recipe(tmp_path, tiny_llama_dir):
    train_file = write_jsonl(tmp_path / "train.jsonl", separable_rows(8))
    val_file = write_jsonl(tmp_path / "val.jsonl", separable_rows(12))
    path = tmp_path / "tiny.yaml"
    path.write_text(f"model: {tiny_llama_dir}\ntemplate: compact\ntrain_file: {train_file}\nval_file: {val_file}\n"
                    "epochs: 1\nbatch_size: 4\ngrad_accum: 1\nlearning_rate: 0.01\neval_batch_size: 8\n"
                    "eval_on_start: false\nlogging_steps: 1\ndevice: cpu\ndtype: float32\n"
                    "lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}\n")
    return path


def test_cells_cross_the_list_with_the_grid_over_the_recipe(recipe, tmp_path):
    config = SweepConfig(name="s", output_dir=str(tmp_path / "sweeps"), recipe=str(recipe),
                         overrides={"epochs": 2}, cells=[{"name": "plain"}, {"name": "aug", "overrides": {
                             "augment.counterfactual": True}}],
                         grid={"learning_rate": [0.01, 0.02], "lora": [{"r": 4}, {"r": 8, "alpha": 16}]})
    cells = plan_cells(config)
    assert len(cells) == 8 and len({cell.identity for cell in cells}) == 8
    assert cells[0].name == "plain, learning_rate=0.01, lora={r: 4}"
    last = cells[-1].config
    assert (last.epochs, last.learning_rate, last.lora.r, last.lora.alpha) == (2, 0.02, 8, 16)
    assert last.lora.target_modules == ["q_proj", "v_proj"] and last.augment.counterfactual  # the recipe's, kept
    assert last.output_dir == str(tmp_path / "sweeps" / "cells" / cells[-1].identity / "train")


@pytest.mark.parametrize("values, message", [
    ({"cells": [{"overrides": {"epochs": 1}}, {"overrides": {"epochs": 1.0}}]}, "repeats another cell"),
    ({"overrides": {"val_file": "data/unified/unified_test.json"}}, "looks like a test split"),
    ({"grid": {"epochs": 2}}, "grid.epochs: expected a non-empty list"),
    ({"overrides": {"lora.rank": 4}}, "unknown key"),
])
def test_a_bad_sweep_is_refused_before_training(recipe, tmp_path, values, message):
    config = SweepConfig(name="bad", output_dir=str(tmp_path), recipe=str(recipe), **values)
    with pytest.raises(ConfigError, match=message):
        plan_cells(config)


def test_sweep_trains_scores_picks_and_resumes(recipe, tmp_path, capsys, monkeypatch):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"name: tiny\noutput_dir: {tmp_path / 'sweeps'}\nrecipe: {recipe}\nn_bootstrap: 20\n"
                          "grid:\n  learning_rate: [0.01, 0.05]\nrule: {max_group_fpr: 1.0, max_group_fnr: 1.0}\n")
    assert main(["sweep", "--config", str(sweep_file), "--quiet"]) == 0
    printed = capsys.readouterr().out
    sweep_dir = tmp_path / "sweeps" / "tiny"
    saved = json.loads((sweep_dir / "sweep.json").read_text())
    assert [cell["name"] for cell in saved["rows"]] == ["learning_rate=0.01", "learning_rate=0.05"]
    assert saved["rule_met"] and saved["winner"] == max(saved["rows"], key=lambda cell: cell["f1"])["name"]
    for cell in saved["rows"]:
        assert cell["n"] == 12 and set(cell["per_group"]) == {"lgbtq", "mexican", "middle_east"}
        assert cell["train_s"] > 0 and "/cells/" in cell["validation_run"]
    table = (sweep_dir / "sweep.md").read_text()
    assert table in printed and f"| **{saved['winner']}** |" in table and "Winner: **" in table

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("hatelens.training.train.train", no_training)
    again = run_sweep(load_sweep(sweep_file), progress=False)
    assert again.rows == saved["rows"]
    other = load_sweep(sweep_file, ["name=other", "grid.learning_rate=[0.05]"])  # another sweep, a cell it shares
    assert [cell["f1"] for cell in run_sweep(other, progress=False).rows] == [saved["rows"][1]["f1"]]


def test_quick_cells_take_one_step_on_sixteen_rows_in_their_own_folder(recipe, tmp_path):
    config = SweepConfig(name="s", output_dir=str(tmp_path), recipe=str(recipe), grid={"learning_rate": [0.01, 0.02]})
    full, quick = plan_cells(config), plan_cells(config, quick=True)
    assert [cell.config.learning_rate for cell in quick] == [0.01, 0.02]
    settings = quick[0].config
    assert (settings.max_train_samples, settings.batch_size * settings.grad_accum, settings.epochs) == (16, 16, 1)
    assert settings.max_val_samples == 16
    assert {cell.identity for cell in full}.isdisjoint(cell.identity for cell in quick)


def test_workers_train_cells_side_by_side_and_a_failure_waits_for_the_others(recipe, tmp_path, monkeypatch):
    missing = {"val_file": str(tmp_path / "none.jsonl")}
    config = SweepConfig(name="par", output_dir=str(tmp_path), recipe=str(recipe), n_bootstrap=20,
                         cells=[{"name": "good"}, {"name": "bad", "overrides": missing}],
                         rule=SweepRule(max_group_fpr=1.0, max_group_fnr=1.0))
    good, bad = plan_cells(config)
    with pytest.raises(Exception, match="none.jsonl"):
        run_sweep(config, progress=False, workers=2)
    assert (tmp_path / "cells" / good.identity / "cell.json").is_file()  # finished although its neighbour failed
    assert not (tmp_path / "cells" / bad.identity / "cell.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("hatelens.training.train.train", no_training)
    config.cells = config.cells[:1]
    assert [row["name"] for row in run_sweep(config, progress=False, workers=2).rows] == ["good"]
