"""gpt-oss on several GPUs of one host: data-parallel evaluation and FSDP LoRA training (issue 7).

One process per GPU (torchrun or `accelerate launch --multi_gpu`); random bf16 weights as in
gpu_gpt_oss.py, with its stand-in tokenizer. Keep NCCL's NVLink multicast off (NCCL_NVLS_ENABLE=0).
    NCCL_NVLS_ENABLE=0 PYTHONPATH=src torchrun --nproc_per_node 2 benchmarks/gpu_multi.py \
        --tokenizer outputs/bench/tokenizer --out $OUT
On a CPU (gloo, a 2-layer model, a few rows), to check the script:
    PYTHONPATH=src torchrun --nproc_per_node 2 benchmarks/gpu_multi.py --tokenizer outputs/bench/tokenizer \
        --tiny --out /tmp/multi

1. Data-parallel evaluation (gpt-oss-20b shape): a full replica per GPU, each process scores every n-th
   chunk of the length-sorted test set, as `accelerate launch -m hatelens evaluate` does.
2. FSDP2 LoRA training: decoder layers, the decoder and lm_head each a `fully_shard` unit; the model is
   built on the meta device and materialised shard by shard, so no process ever holds the whole model.
   gpt-oss-120b in bf16 is 234 GB: it needs 4 or more 80 GB cards; `--layers` cuts its depth to fit fewer
   (every layer costs the same, so step time scales with depth).
"""

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from gpu_gpt_oss import (
    LORA_TARGETS,
    TEST,
    TRAIN,
    active_parameters,
    build_model,
    gpt_oss_config,
    make_batches,
    synchronize,
    train_step,
    training_sequences,
)

from hatelens import data
from hatelens.backends import prompts
from hatelens.backends.fast_paths import use_sink_attention
from hatelens.backends.hf import HFClassifier
from hatelens.evaluation import evaluate


def peak_gib_everywhere() -> float:
    """The largest peak allocation over all processes, GiB."""
    value = torch.tensor([torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0])
    if torch.cuda.is_available():
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.item()


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def data_parallel_eval(config, tokenizer, examples, device, batch_size: int) -> dict:
    """Every process: a full replica, every n-th chunk; the wall time is the slowest process's."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model(config, device)
    use_sink_attention(model)
    template = prompts.load_template("baseline")
    chunks = evaluate.plan_chunks(examples, batch_size * evaluate.CHUNK_BATCHES)[rank::world]
    HFClassifier(model, tokenizer, template, batch_size=batch_size).classify([e.text for e in examples[:batch_size]])
    classifier = HFClassifier(model, tokenizer, template, batch_size=batch_size)
    reset_peak()
    dist.barrier()
    started = time.perf_counter()
    rows = sum(len(classifier.classify([example.text for example in chunk])) for chunk in chunks)
    synchronize()
    dist.barrier()
    wall_s = time.perf_counter() - started
    total = torch.tensor([rows], device=device)
    dist.all_reduce(total)
    result = {"processes": world, "rows": int(total.item()), "batch_size": batch_size, "wall_s": wall_s,
              "samples_per_s": total.item() / wall_s, "peak_gib_per_gpu": peak_gib_everywhere()}
    del model, classifier
    reset_peak()
    return result


def sharded_lora_model(config, device, rank_count: int):
    """LoRA on q/k/v/o over a model sharded with FSDP2 from the start (meta device, then shard by shard)."""
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    use_sink_attention(model)
    lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    mesh = init_device_mesh(torch.device(device).type, (rank_count,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model.model, mesh=mesh)
    fully_shard(model.lm_head, mesh=mesh)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
            if "norm" in name:
                local.fill_(1.0)
            elif name.endswith("bias") or "lora_B" in name:
                local.zero_()
            else:
                local.normal_(0.0, 0.02)
        rotary = model.model.rotary_emb
        inv_freq, _ = ROPE_INIT_FUNCTIONS[config.rope_parameters["rope_type"]](config, device)
        rotary.inv_freq.copy_(inv_freq)
        rotary.original_inv_freq.copy_(inv_freq)
    model.train()
    return peft_model


def fsdp_training(config, tokenizer, train, device, *, batch_size: int, checkpointing: int, steps: int,
                  warmup: int = 2) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    reset_peak()
    started = time.perf_counter()
    model = sharded_lora_model(config, device, world)
    synchronize()
    build_s = time.perf_counter() - started
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sequences = training_sequences(tokenizer, prompts.load_template("baseline"), train[rank::world])
    batch_size = min(batch_size, len(sequences))  # the CPU check's few rows
    batches = list(itertools.islice(itertools.cycle(make_batches(sequences, batch_size, by_length=True, seed=rank)),
                                    warmup + steps))
    result = {"layers": config.num_hidden_layers, "experts": config.num_local_experts, "processes": world,
              "batch_size_per_gpu": batch_size, "checkpointing": checkpointing, "build_s": build_s,
              "active_parameters": active_parameters(config)}
    try:
        for batch in batches[:warmup]:
            train_step(model, optimizer, batch, tokenizer.pad_token_id, loss="answer", opening=[])
        synchronize()
        dist.barrier()
        started = time.perf_counter()
        for batch in batches[warmup:]:
            loss = train_step(model, optimizer, batch, tokenizer.pad_token_id, loss="answer", opening=[])
        synchronize()
        dist.barrier()
        wall_s = time.perf_counter() - started
        result.update(samples_per_s=world * batch_size * (len(batches) - warmup) / wall_s,
                      step_s=wall_s / (len(batches) - warmup), loss=loss)
    except torch.OutOfMemoryError:
        result["oom"] = True
    result["peak_gib_per_gpu"] = peak_gib_everywhere()
    del model, optimizer
    reset_peak()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="2-layer models and a few rows, for a CPU check")
    parser.add_argument("--layers-120b", type=int, default=12, help="depth of the 120b-shaped training run")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    test, train = data.load_examples(TEST).examples, data.load_examples(TRAIN).examples
    if args.tiny:
        test, train = test[:24], train[:48]
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
    out = Path(args.out)

    def record(name, value):
        results[name] = value
        if rank == 0:
            print(f"{name}: {json.dumps(value)}", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_multi.json").write_text(json.dumps(results, indent=1))

    small = "tiny" if args.tiny else "20b"
    record("eval_dp_20b", data_parallel_eval(gpt_oss_config(small, tokenizer), tokenizer, test, device,
                                             args.eval_batch_size))
    steps = 1 if args.tiny else args.steps
    for batch_size, checkpointing in ((32, 0),):
        record(f"train_fsdp_20b_b{batch_size}_gc{checkpointing}", fsdp_training(
            gpt_oss_config(small, tokenizer), tokenizer, train, device, batch_size=batch_size,
            checkpointing=checkpointing, steps=steps))
    big = gpt_oss_config("tiny" if args.tiny else "120b", tokenizer)
    if not args.tiny:
        big.num_hidden_layers = args.layers_120b
        big.layer_types = big.layer_types[:args.layers_120b]
    for batch_size, checkpointing in ((16, 1), (32, 1)):
        record(f"train_fsdp_120b_{big.num_hidden_layers}layers_b{batch_size}_gc{checkpointing}", fsdp_training(
            big, tokenizer, train, device, batch_size=batch_size, checkpointing=checkpointing, steps=steps))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
