"""The hf backend's fast paths on a CUDA device (bf16, fused attention kernels): same answers as the
plain path. Marked `gpu`: skipped where no CUDA device is visible (CI has none).
    pytest -m gpu tests/test_gpu.py
"""

import pytest
import torch
from fixtures import eager_and_sink_logits
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.fast_paths import SINK_ATTENTION, use_sink_attention
from hatelens.backends.hf import HFClassifier

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TEXTS = ["hello there", "a much longer post about gay people and mexican food and the middle east", "x",
         "the post", "another post, with a comma"] * 3


def _model(folder, *, fused: bool):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to("cuda").eval()
    if fused:
        use_sink_attention(model)
    return model


def test_prefix_reuse_and_fused_attention_match_the_plain_eager_path_on_cuda(tiny_gpt_oss_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt_oss_dir)
    template = prompts.load_template("baseline")
    plain = HFClassifier(_model(tiny_gpt_oss_dir, fused=False), tokenizer, template, batch_size=4,
                         reuse_prefix=False).classify(TEXTS)
    fast_model = _model(tiny_gpt_oss_dir, fused=True)
    assert fast_model.config._attn_implementation == SINK_ATTENTION
    fast = HFClassifier(fast_model, tokenizer, template, batch_size=4)
    scores = fast.classify(TEXTS)
    assert fast._prefix is not None
    # bf16 on both paths: agreement to bf16 rounding, not bit for bit
    assert [o.score for o in scores] == pytest.approx([o.score for o in plain], abs=2e-2)


def test_batches_launched_ahead_put_every_score_in_its_place_on_cuda(tiny_gpt_oss_dir):
    """On CUDA a batch is read after the next one is launched (`_start_batch`): each text still gets the score it
    gets alone (float32: to 1e-5, closer than the texts' scores are to one another), and the batches' seconds
    and rows add up."""
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).to("cuda").eval()
    use_sink_attention(model)
    classifier = HFClassifier(model, AutoTokenizer.from_pretrained(tiny_gpt_oss_dir),
                              prompts.load_template("baseline"), batch_size=2)
    texts = [f"post {index} " + "word " * (index % 5) for index in range(11)]
    together = [output.score for output in classifier.classify(texts)]
    alone = [classifier.score_ids([classifier.encode(text)])[0] for text in texts]
    assert len({round(score, 4) for score in alone}) > 5  # a score in the wrong place would show
    assert together == pytest.approx(alone, abs=1e-5)
    timing = classifier.timing
    assert timing["first_batch_rows"] + timing["later_rows"] == len(texts) and timing["later_batches"] == 5


def test_fused_sink_attention_trains_like_eager_on_cuda(tiny_gpt_oss_dir):
    torch.manual_seed(0)
    eager, fused = _model(tiny_gpt_oss_dir, fused=False), _model(tiny_gpt_oss_dir, fused=True)
    input_ids = torch.randint(0, eager.config.vocab_size, (4, 64), device="cuda")
    for model in (eager, fused):
        model.train()
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    for name in ("q_proj", "o_proj"):
        want = getattr(eager.model.layers[1].self_attn, name).weight.grad.float()
        got = getattr(fused.model.layers[1].self_attn, name).weight.grad.float()
        error = (torch.linalg.norm(got - want) / torch.linalg.norm(want)).item()
        assert error < 5e-2, f"{name}: relative gradient error {error:.3g}"


def test_inference_sink_attention_matches_eager_on_cuda_in_float32(tiny_gpt_oss_dir):
    """The memory-efficient kernel's log-sum-exp path (no gradients): eager's logits at every real token, with
    pad queries past the sliding window that see no key at all, and every output finite."""
    expected, got, real = eager_and_sink_logits(tiny_gpt_oss_dir, "cuda")
    assert torch.isfinite(got).all()
    assert torch.allclose(got[real], expected[real], atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit
@pytest.mark.parametrize("triton_kernels", ["1", "0"])
def test_gpu_speedups_switch_on_for_gpt_oss_and_keep_the_scores(tiny_gpt_oss_dir, triton_kernels, monkeypatch):
    from hatelens.backends.fast_paths import restore_expert_gate, use_gpu_speedups
    from hatelens.backends.fused_kernels import unfuse

    monkeypatch.setenv("HATELENS_TRITON_KERNELS", triton_kernels)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt_oss_dir)
    template = prompts.load_template("baseline")
    model = _model(tiny_gpt_oss_dir, fused=False)
    plain = HFClassifier(model, tokenizer, template, batch_size=4, reuse_prefix=False).classify(TEXTS)
    try:
        report = use_gpu_speedups(model, inference=True, compile_gate=True)
        if triton_kernels == "1":  # the fused experts apply the gate themselves: nothing to compile
            assert report["applied"] == ["fused experts", "fused RMSNorm", "fused rotary", "fused sink attention",
                                         "experts skip padding"]
            assert "compile_s" not in report and report["experts"] == "GptOssExperts (hatelens_fused)"
        else:
            assert report["applied"] == ["compiled expert gate", "fused sink attention", "experts skip padding"]
            assert report["compile_s"] > 0 and report["experts"].startswith("GptOssExperts")
        fast = HFClassifier(model, tokenizer, template, batch_size=4).classify(TEXTS)
    finally:
        restore_expert_gate(model)
        unfuse(model)
    assert [o.score for o in fast] == pytest.approx([o.score for o in plain], abs=2e-2)


def _opening_trainer(folder, work, dtype: str):
    """A trainer of a tiny model on CUDA (no dropout), one batch of rows of different lengths."""
    from fixtures import tiny_train_config

    from hatelens.backends import models
    from hatelens.training import records as sft_data
    from hatelens.training.train import Records, TrainingSetup, build_trainer, load_base_model, load_splits

    config = tiny_train_config(folder, work, "lora.dropout=0", "device=cuda", f"dtype={dtype}")
    source = models.resolve_model(str(folder))
    tokenizer = models.load_tokenizer(source)
    dataset = sft_data.build_dataset(load_splits(config)[0], prompts.load_template("compact"), tokenizer,
                                     max_length_tokens=512, where="t")
    opening = sft_data.shared_opening([dataset])
    model = load_base_model(config, source, tokenizer, getattr(torch, dtype), "cuda")
    setup = TrainingSetup(config=config, run_dir=work, source=source, tokenizer=tokenizer,
                          records=Records(dataset, dataset, opening), validation=None, resume_from=None, main=True,
                          progress=False, callbacks=())
    trainer = build_trainer(setup, model, batch_size=4, grad_accum=1)
    batch = trainer.data_collator([dataset[index] for index in range(4)])
    return trainer, {key: value.to("cuda") for key, value in batch.items()}, opening


# Llama in float32: the graphs' arithmetic to float32 rounding. gpt-oss in bf16, as it trains: its experts'
# grouped products have no float32 CUDA kernel (transformers' fallback reads the offsets on the host, which a
# capture refuses: the eager opening then runs, with a warning).
@pytest.mark.filterwarnings("ignore::FutureWarning")  # PEFT reads transformers' deprecated is_gradient_checkpointing
@pytest.mark.parametrize(("fixture", "dtype", "tolerance"), [("tiny_llama_dir", "float32", 1e-4),
                                                            ("tiny_gpt_oss_dir", "bfloat16", 2e-2)])
def test_the_opening_replayed_as_cuda_graphs_gives_the_eager_loss_and_gradients(fixture, dtype, tolerance, request,
                                                                                  tmp_path, monkeypatch):
    """graphed_opening.py: the shared opening's forward and backward replayed as CUDA graphs give the eager
    pass's loss and LoRA gradients, step after step, and read the weights as they are now (after an update)."""
    from hatelens.training import graphed_opening

    trainer, batch, opening = _opening_trainer(request.getfixturevalue(fixture), tmp_path, dtype)
    model = trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def loss_and_gradients(graphed: bool):
        monkeypatch.setenv("HATELENS_GRAPH_OPENING", "1" if graphed else "0")
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        return loss.item(), {name: p.grad.clone() for name, p in trainable.items() if p.grad is not None}

    model.train()
    for update in range(3):
        eager_loss, eager = loss_and_gradients(False)
        graphed_loss, graphed = loss_and_gradients(True)
        assert graphed_loss == pytest.approx(eager_loss, rel=tolerance / 10)
        assert graphed.keys() == eager.keys() and len(graphed) == len(trainable)
        for name in eager:
            error = (torch.linalg.norm((graphed[name] - eager[name]).float()) /
                     torch.linalg.norm(eager[name].float()).clamp(min=1e-12)).item()
            assert error < tolerance, f"step {update}, {name}: relative gradient error {error:.3g}"
        with torch.no_grad():  # an optimizer step's worth of change: the next replay must read the new weights
            for p in trainable.values():
                p.add_(0.05 * torch.randn_like(p))
    graphs = graphed_opening._GRAPHS[model]
    assert len(graphs) == 1 and next(iter(graphs.values())) is not None  # captured once, replayed since
    assert len(next(iter(graphs))) == len(opening)
