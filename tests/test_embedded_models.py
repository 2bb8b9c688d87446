"""The real embedded models (installed by `make setup`): slow, except one smoke test CI runs."""

import json

import pytest

from hatelens.config import EvalConfig, ModelConfig
from hatelens.evaluation.evaluate import evaluate


@pytest.mark.slow
@pytest.mark.smoke
def test_smollm2_baseline_on_a_handful_of_test_rows(tmp_path):
    config = EvalConfig(data="data/unified/unified_test.json", output_dir=str(tmp_path), max_samples=12,
                        n_bootstrap=50, model=ModelConfig(model="smollm2-135m", batch_size=6))
    result = evaluate(config, progress=False)
    assert result.metrics["n"] == 12 and result.metrics["n_invalid"] == 0
    assert result.metrics["roc_auc"] is not None
    scores = [row for row in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(scores) == 12


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_generate_mode_answers_are_parsed_or_counted_invalid(tmp_path, model):
    config = EvalConfig(data="data/unified/unified_test.json", output_dir=str(tmp_path), max_samples=6,
                        n_bootstrap=20, model=ModelConfig(model=model, mode="generate", max_new_tokens=5))
    result = evaluate(config, progress=False)
    assert result.metrics["n"] == 6
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert all(row["score"] is None and row["prediction"] in ("hate", "normal", None) for row in rows)
    assert result.metrics["n_invalid"] == sum(row["prediction"] is None for row in rows)
