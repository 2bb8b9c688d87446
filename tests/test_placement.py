"""Split placement (backends/placement.py): the choice from sizes, the layer map, and scores that do not move
when the layers sit in separate device groups, with the prompt opening's cache reused or not."""

import logging

import pytest
import torch
from accelerate import dispatch_model
from accelerate.hooks import AlignDevicesHook
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import hf, models, placement, prompts
from hatelens.backends.placement import Placement, choose_placement, plan_placement
from hatelens.config import ModelConfig
from hatelens.errors import ModelError

GB = 10**9
H200 = 143_771 * 2**20  # bytes of one H200 (150.8 GB), as torch reports it
TEXTS = ["you people are vermin and should leave", "lovely weather at the lake today",
         "those immigrants ruin everything", "my neighbour brought soup", "go back where you came from",
         "the match was great fun", "they are animals, all of them", "we planted tomatoes"]


def test_auto_keeps_a_model_that_fits_one_card_on_it():
    kind, why = choose_placement("auto", 42 * GB, [H200, H200])  # gpt-oss-20b in bf16
    assert kind == "single" and why.startswith("42.0 GB of weights fit one GPU")


def test_auto_splits_a_model_no_card_holds_over_several():
    kind, why = choose_placement("auto", 234 * GB, [H200, H200])  # gpt-oss-120b in bf16 on two H200s
    assert kind == "split" and "split over 2 GPUs" in why
    # 80% of a card is the line: 112.8 GB of a 141 GB card fits, 113 GB does not
    assert choose_placement("auto", int(112.8 * GB), [141 * GB] * 2)[0] == "single"
    assert choose_placement("auto", 113 * GB, [141 * GB] * 2)[0] == "split"


def test_what_cannot_fit_is_a_clear_error():
    with pytest.raises(ModelError, match="do not fit the one GPU"):
        choose_placement("auto", 234 * GB, [H200])
    with pytest.raises(ModelError, match="do not fit even split over the 2 GPUs"):
        choose_placement("auto", 234 * GB, [80 * GB, 80 * GB])
    with pytest.raises(ModelError, match="placement split needs 2 or more GPUs; 1 visible"):
        choose_placement("split", 1 * GB, [80 * GB])
    with pytest.raises(ModelError, match="unknown placement 'sharded'; choose one of: auto, single, split"):
        choose_placement("sharded", 1 * GB, [80 * GB])


def test_forced_placements_win_over_sizes():
    assert choose_placement("single", 234 * GB, [H200] * 2)[0] == "single"
    assert choose_placement("split", 1 * GB, [H200] * 2)[0] == "split"


def _plan(model_dir, requested: str, free_fraction: float, gpus: int = 2) -> Placement:
    """The plan for a tiny model on `gpus` made-up cards, each with `free_fraction` of its weights free."""
    empty = placement.empty_model(str(model_dir), torch.float32)
    size = placement.weights_bytes(empty, torch.float32)
    return plan_placement(ModelConfig(model=str(model_dir), placement=requested), models.resolve_model(str(model_dir)),
                          torch.float32, "cuda", free_bytes=[int(free_fraction * size)] * gpus)


def test_split_map_puts_whole_layers_in_blocks_embeddings_first(tiny_gpt_oss_dir):
    plan = _plan(tiny_gpt_oss_dir, "auto", free_fraction=1.2)  # 80% of 1.2x the weights: no card holds them
    assert plan.kind == "split" and plan.weights_bytes > 0
    device_map = plan.device_map
    assert set(device_map.values()) == {0, 1}
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 1
    assert device_map["model.layers.0"] == 0 and device_map["model.layers.1"] == 1  # a layer is never cut
    assert plan.to_dict()["kind"] == "split" and set(plan.to_dict()["modules_per_device"]) == {"0", "1"}
    assert "modules per GPU: cuda:0" in placement.describe(plan)


def test_plan_on_cpu_or_one_card_needs_no_sizes(tiny_llama_dir):
    source = models.resolve_model(str(tiny_llama_dir))
    assert plan_placement(ModelConfig(placement="auto"), source, torch.float32, "cpu").why == "device cpu"
    assert plan_placement(ModelConfig(placement="auto"), source, torch.float32, "cuda",
                          free_bytes=[GB]).why == "one GPU visible"
    with pytest.raises(ModelError, match="placement split needs --device cuda with 2 or more GPUs, not cpu"):
        plan_placement(ModelConfig(placement="split"), source, torch.float32, "cpu")
    assert _plan(tiny_llama_dir, "auto", free_fraction=2.0).kind == "single"  # fits one card
    assert _plan(tiny_llama_dir, "split", free_fraction=2.0).kind == "split"  # ... unless split is asked for


def _split_on_cpu(model_dir, plan: Placement):
    """The model loaded through the plan's layer map with every device group on the CPU, and accelerate's
    hooks at the group boundaries, as a map over several GPUs would put them."""
    cpu_map = {name: "cpu" for name in plan.device_map}
    model = models.load_model(models.resolve_model(str(model_dir)), device="cpu", device_map=cpu_map)
    return dispatch_model(model, device_map=cpu_map, force_hooks=True)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_split_model_scores_equal_the_single_device_ones(fixture, reuse_prefix, request):
    model_dir = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = prompts.load_template("baseline")
    single = hf.HFClassifier(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, template, batch_size=3,
                             reuse_prefix=reuse_prefix)
    split_model = _split_on_cpu(model_dir, _plan(model_dir, "split", free_fraction=2.0))
    assert isinstance(split_model.model.layers[1]._hf_hook, AlignDevicesHook)  # the hooks are really there
    split = hf.HFClassifier(split_model, tokenizer, template, batch_size=3, reuse_prefix=reuse_prefix)
    expected = [output.score for output in single.classify(TEXTS)]
    scores = [output.score for output in split.classify(TEXTS)]
    assert split.reuse_prefix == reuse_prefix and (split._prefix is not None) == reuse_prefix
    assert scores == pytest.approx(expected, abs=1e-6)


def test_the_log_and_the_classifier_say_which_placement_ran(tiny_llama_dir, caplog):
    with caplog.at_level(logging.INFO, logger="hatelens.backends.hf"):
        classifier = hf.create(ModelConfig(model=str(tiny_llama_dir), device="cpu"))
    assert classifier.timing["placement"] == {"kind": "single", "why": "device cpu"}  # metrics.json run.timing
    assert "placement single: device cpu" in caplog.text
