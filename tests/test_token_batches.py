"""Training batches bounded by tokens: every row once per epoch, the budget kept, plugged into the trainer."""

import pytest
from fixtures import tiny_train_config
from transformers import TrainerCallback

from hatelens.errors import ConfigError
from hatelens.training.token_batches import TokenBudgetBatchSampler
from hatelens.training.train import train

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]

LENGTHS = [30, 12, 12, 50, 13, 12, 90, 14, 20, 12, 12, 31, 15, 200]


def test_every_row_once_per_epoch_within_the_budget():
    sampler = TokenBudgetBatchSampler(LENGTHS, max_batch_tokens=40, max_rows=3, seed=0, skipped=10)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(index for batch in batches for index in batch) == list(range(len(LENGTHS)))
        for batch in batches:
            assert len(batch) <= 3
            assert len(batch) == 1 or len(batch) * (max(LENGTHS[i] for i in batch) - 10) <= 40
    assert [len(batch) for batch in batches].count(1) < len(batches)  # short rows do share batches


def test_order_is_shuffled_by_seed_and_epoch_and_reproducible():
    def epoch_batches(seed, epoch):
        sampler = TokenBudgetBatchSampler(LENGTHS, max_batch_tokens=40, max_rows=3, seed=seed, skipped=10)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(0, 0) == epoch_batches(0, 0)
    assert epoch_batches(0, 0) != epoch_batches(0, 1)
    assert epoch_batches(0, 0) != epoch_batches(1, 0)


def test_padded_tokens_count_the_longest_row_of_each_batch():
    sampler = TokenBudgetBatchSampler([5, 5, 8, 20], max_batch_tokens=16, max_rows=8)
    assert [len(batch) for batch in sorted(sampler, key=len, reverse=True)] == [2, 1, 1]  # 2 x 5; 8; 20
    assert sampler.padded_tokens() == 2 * 5 + 8 + 20


def test_a_non_positive_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="max_batch_tokens=null"):
        TokenBudgetBatchSampler(LENGTHS, max_batch_tokens=0, max_rows=4)


class SamplerWatch(TrainerCallback):
    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.batch_sampler = train_dataloader.batch_sampler


def test_training_with_a_token_budget_uses_the_sampler_and_times_its_steps(tiny_gpt_oss_dir, tmp_path):
    watch = SamplerWatch()
    config = tiny_train_config(tiny_gpt_oss_dir, tmp_path, "epochs=2", "eval_on_start=false", "batch_size=8",
                               "max_batch_tokens=70")
    result = train(config, progress=False, callbacks=(watch,))
    assert isinstance(watch.batch_sampler, TokenBudgetBatchSampler)
    batches, speed = result.summary["batches"], result.summary["speed"]
    assert batches["by"] == "tokens" and batches["max_batch_tokens"] == 70
    assert 1 < batches["batches_per_epoch"] < 8  # neither one batch nor one row per batch
    assert speed["rows"] == 2 * 8  # every row once per epoch
    assert speed["steps_timed"] == result.summary["steps"] == 2 * batches["batches_per_epoch"]
    assert speed["first_step_s"] > 0 and speed["steady_samples_per_s"] > 0
    assert result.summary["train_loss"] > 0


def test_row_batches_stay_the_default(tiny_llama_dir, tmp_path):
    result = train(tiny_train_config(tiny_llama_dir, tmp_path, "epochs=1", "eval_on_start=false"), progress=False)
    assert result.summary["batches"] == {"by": "rows", "rows": 4}
    assert result.summary["speed"]["rows"] == 8 and result.summary["steps"] == 2
