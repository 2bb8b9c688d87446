"""`hatelens train` (LoRA fine-tuning into a run folder) and `hatelens merge` (adapter -> one model)."""

import argparse

from hatelens import extras
from hatelens.cli.options import add_config_flags, add_overrides, config_flag_values
from hatelens.config import TrainConfig, load_config

# TrainConfig key -> the seed scripts' extra spellings of its flag (--kebab-case and --snake_case come from
# the key; the type, default and help from TrainConfig itself)
TRAIN_FLAGS = {
    "model": ("--model_name", "--model-name"),
    "template": (),
    "train_file": (),
    "val_file": (),
    "output_dir": (),
    "name": (),
    "epochs": (),
    "batch_size": (),
    "grad_accum": ("--gradient_accumulation_steps",),
    "learning_rate": ("--lr",),
    "max_train_samples": (),
    "device": (),
    "lora.r": ("--lora-rank", "--lora_rank"),
    "lora.alpha": (),
    "lora.dropout": (),
}


def register(subparsers) -> None:
    summary = "LoRA fine-tuning on the training split, validated each epoch, into a run folder"
    parser = subparsers.add_parser("train", help=summary, description=summary)
    parser.add_argument("--config", help="training recipe (configs/lora/*.yaml)")
    add_config_flags(parser, TrainConfig, TRAIN_FLAGS)
    parser.add_argument("--resume", action="store_true",
                        help="continue the newest unfinished run of this config from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (train.log still records progress)")
    add_overrides(parser)
    parser.set_defaults(handler=run_train)

    summary = "merge a LoRA adapter into its base model: safetensors model + tokenizer"
    parser = subparsers.add_parser("merge", help=summary, description=summary)
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder (runs/<train run>/adapter)")
    parser.add_argument("--output", required=True, help="new folder for the merged model")
    parser.add_argument("--model", help="base model (default: the one named in the adapter's config)")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument("--evaluation", action="append", default=[], metavar="RUN_DIR",
                        help="an evaluation run of the adapter whose metrics go into the model card (repeatable)")
    parser.set_defaults(handler=run_merge)


def build_config(args: argparse.Namespace) -> TrainConfig:
    return load_config(TrainConfig, args.config, args.overrides, base=config_flag_values(args, TRAIN_FLAGS))


def run_train(args: argparse.Namespace) -> int:
    extras.require("train", "hatelens train")
    from hatelens.backends.text_scores import score_texts
    from hatelens.training.train import train

    config = build_config(args)
    result = train(config, score_texts=score_texts, progress=not args.quiet, resume=args.resume)
    if not result.main_process:  # one of several processes: the main one reports
        return 0
    summary = result.summary
    best = summary["best"]
    print(f"Trained:  {summary['model']} + LoRA r={config.lora.r} on {summary['n_train']} examples, "
          f"{summary['epochs_done']} epochs in {summary['wall_s'] / 60:.1f} min "
          f"({summary['train_samples_per_s']:.2f} samples/s)")
    print(f"Best:     {best['checkpoint']} ({best['metric']} {best['value']:.4f}): {best['why']}")
    for row in summary["epochs"]:
        figures = ", ".join(f"{key} {row[key]:.4f}" for key in ("train_loss", "eval_loss", "eval_f1", "eval_roc_auc")
                            if row.get(key) is not None)
        print(f"  epoch {row['epoch']}: {figures}")
    for warning in summary["warnings"]:
        print(f"Warning:  {warning}")
    print(f"Wrote:    {result.run_dir}/  (adapter/ with its README.md model card, training_summary.json, "
          "train.log, tensorboard/)")
    print(f"Next:     hatelens evaluate --model {result.adapter_dir} --template {config.template} "
          "--data data/unified/unified_test.json")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    extras.require("train", "hatelens merge")
    from hatelens.training.merge import merge_adapter

    output = merge_adapter(args.adapter, args.output, model=args.model, dtype=args.dtype, device=args.device,
                           evaluation_runs=args.evaluation)
    print(f"Wrote:  {output}/  (model.safetensors, config.json, tokenizer, README.md model card; "
          f"load it with --model {output})")
    return 0
