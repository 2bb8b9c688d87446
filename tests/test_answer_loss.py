"""answer_loss: the shared opening changes neither the loss nor the gradients, with or without
gradient checkpointing (which drops caches: the opening must then run with every row)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hatelens.training.answer_loss import IGNORE_INDEX, answer_loss, opening_length


def _batch(vocab: int, opening: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randint(5, vocab, (opening,), generator=generator)
    rows, width = [], opening + 9
    input_ids = torch.zeros((3, width), dtype=torch.long)
    attention_mask = torch.zeros((3, width), dtype=torch.long)
    labels = torch.full((3, width), IGNORE_INDEX)
    for row, length in enumerate((width, width - 3, width - 5)):  # right padding, different lengths
        ids = torch.cat([shared, torch.randint(5, vocab, (length - opening,), generator=generator)])
        input_ids[row, :length], attention_mask[row, :length] = ids, 1
        labels[row, length - 2:length] = ids[-2:]  # a two-token answer at each row's end
        rows.append(ids)
    return input_ids, attention_mask, labels, shared.tolist()


def _loss_and_gradients(model, batch, opening: int):
    input_ids, attention_mask, labels, _ = batch
    model.zero_grad()
    result = answer_loss(model, input_ids, attention_mask, labels, opening=opening)
    result.loss.backward()
    gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters()
                 if parameter.grad is not None}
    return result.loss.item(), gradients, result.counted.item()


@pytest.mark.parametrize("checkpointing", [False, True, "torch wrapper"])
@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_shared_opening_gives_the_plain_loss_and_gradients(fixture, checkpointing, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture), dtype=torch.float32).train()
    if checkpointing == "torch wrapper":  # what accelerate's FSDP activation_checkpointing applies
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing,
        )

        apply_activation_checkpointing(model, check_fn=lambda module: module in set(model.model.layers))
    elif checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    batch = _batch(model.config.vocab_size)
    assert opening_length(batch[0], batch[3]) == 12
    plain_loss, plain_gradients, counted = _loss_and_gradients(model, batch, 0)
    shared_loss, shared_gradients, _ = _loss_and_gradients(model, batch, 12)
    assert counted == 6
    input_ids, attention_mask, labels, _ = batch  # transformers' own loss: every position through lm_head
    assert plain_loss == pytest.approx(model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                                             use_cache=False).loss.item(), rel=1e-5)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert shared_gradients.keys() == plain_gradients.keys() and plain_gradients
    for name in plain_gradients:
        torch.testing.assert_close(shared_gradients[name], plain_gradients[name], atol=1e-6, rtol=1e-4)


def test_opening_length_needs_every_row_to_start_with_it():
    input_ids = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5]])
    assert opening_length(input_ids, [1, 2, 3]) == 3
    assert opening_length(input_ids, [1, 2, 4]) == 0
    assert opening_length(input_ids[:1], [1, 2, 3]) == 0  # one row: nothing to share
    assert opening_length(input_ids, [1, 2, 3, 4]) == 0  # no token left after it
    assert opening_length(input_ids, None) == 0
