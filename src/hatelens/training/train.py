"""LoRA fine-tuning of a causal LM on the training split, validated every epoch, into a run folder.

    hatelens train --config configs/lora/cpu_small.yaml          # the embedded model, on a 2-core CPU
    hatelens train --config configs/lora/cpu_small.yaml --resume # continue a killed run
    hatelens evaluate --model runs/<run>/adapter --template <the recipe's template> --data ...

The records are the evaluator's own prompts (same template, same chat template) followed by the
answer it reads; the loss is on the answer tokens only (records.py, answer_loss.py). TRL's SFTTrainer
does the loop with a PEFT LoraConfig (trainer.py adapts it): cosine schedule with warm-up, evaluation
on the validation split each epoch, early stopping, the best checkpoint by validation loss or F1 (the
F1 of the evaluator's own scores: the caller hands in `backends.text_scores.score_texts`).

runs/<UTC stamp>_<name>/
  adapter/                 PEFT adapter (safetensors) + tokenizer: the best checkpoint
  training_summary.json    wall time, samples/s, losses per epoch, best checkpoint and why, parameters
  train.log                the same progress, as plain lines (tail -f it)
  tensorboard/             tensorboard --logdir runs/<run>/tensorboard
  checkpoints/             the last and best checkpoints (safetensors + JSON): what --resume reads
  config.yaml, manifest.json

Data-parallel on several GPUs (one process each; CPU processes with --device cpu):
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m hatelens train --config ...
The main process picks the run folder and writes every file; the others train beside it, silently.
"""

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import peft
import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import EarlyStoppingCallback, set_seed
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig

from hatelens import data, runs, trackers
from hatelens.backends import models, prompts
from hatelens.backends.fast_paths import use_gpu_speedups
from hatelens.backends.models import free_memory, pick_device, pick_dtype
from hatelens.config import TrainConfig, to_dict
from hatelens.errors import ConfigError, ModelError
from hatelens.files import file_sha256
from hatelens.process_team import broadcast, process_team
from hatelens.training import records as sft_data
from hatelens.training.callbacks import LossGuard, TrainingProgress
from hatelens.training.model_card import write_model_card
from hatelens.training.summary import BEST_METRICS, build_summary
from hatelens.training.trainer import AnswerSFTTrainer, TextScorer, ValidationScoring, last_checkpoint

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"  # written last: its presence marks a finished run
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
MIN_SHARED_OPENING_TOKENS = 8  # a shorter shared prompt opening is not worth its own forward pass


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    summary: dict
    main_process: bool = True  # False in the other processes of a multi-process run (they print nothing)


def train(config: TrainConfig, *, score_texts: TextScorer | None = None, progress: bool = True,
          resume: bool = False, callbacks: tuple = ()) -> TrainResult:
    """Fine-tune, keep the best adapter, write the run folder.

    score_texts: P(hate) per validation text for eval_f1 / eval_roc_auc (`backends.text_scores.score_texts`, which
    `hatelens train` and `hatelens run` pass); None: validation loss only. resume: continue the newest
    unfinished run of the same config from its last checkpoint. callbacks: extra transformers TrainerCallbacks.
    """
    check_config(config, score_texts)
    train_examples, val_examples = load_splits(config)
    identity = runs.config_hash(config, train=data.examples_hash(train_examples), val=data.examples_hash(val_examples))
    team = process_team(config.device)  # None unless launched as several processes (accelerate, torchrun)
    main = team is None or team.is_main_process
    run_dir = pick_run_dir(config, identity, resume) if main else None
    if team is not None:  # every process trains into the main process's folder
        run_dir = Path(broadcast(team, str(run_dir)))
    with run_log(run_dir / LOG_FILE if main else None):
        resume_from = last_checkpoint(run_dir / CHECKPOINTS_DIR) if resume else None
        logger.info("run folder %s%s", run_dir, f" (resuming from {resume_from.name})" if resume_from else "")
        template = prompts.load_template(config.template)
        train_examples = sft_data.training_examples(train_examples, template, config.augment)
        if main:
            write_run_files(run_dir, config, identity, template, train_examples, val_examples)

        source = models.resolve_model(config.model)
        tokenizer = models.load_tokenizer(source, trust_remote_code=config.trust_remote_code)
        setup = TrainingSetup(
            config=config, run_dir=run_dir, source=source, tokenizer=tokenizer,
            records=build_records(config, template, tokenizer, train_examples, val_examples),
            validation=validation_scoring(val_examples, template, score_texts, tokenizer, config.max_length_tokens),
            resume_from=resume_from,
            main=main, progress=progress and main, callbacks=callbacks)
        fit = fit_with_memory_backoff(setup)

        adapter_dir = run_dir / ADAPTER_DIR
        fit.trainer.save_model(str(adapter_dir))  # the best checkpoint, loaded back at the end of training
        summary = build_summary(config, fit.trainer, fit.output, wall_s=fit.wall_s, n_train=len(setup.records.train),
                                batch_size=fit.batch_size, grad_accum=fit.grad_accum, backoffs=fit.backoffs,
                                resumed_from=str(resume_from) if resume_from else None, adapter_dir=adapter_dir)
        if main:
            write_results(run_dir, adapter_dir, config, template, summary)
    return TrainResult(run_dir=run_dir, adapter_dir=adapter_dir, summary=summary, main_process=main)


def pick_run_dir(config: TrainConfig, identity: str, resume: bool) -> Path:
    """With resume, the newest unfinished run of the same config; else (or when there is none) a new folder."""
    run_dir = runs.find_unfinished(Path(config.output_dir), identity, SUMMARY_FILE) if resume else None
    if resume and run_dir is None:
        logger.warning("--resume: no unfinished run of this config in %s; starting a new one", config.output_dir)
    return run_dir or runs.new_run_dir(Path(config.output_dir), config.name or f"train_{Path(config.model).name}")


@dataclass
class Records:
    train: object  # datasets.Dataset of input_ids / labels / length
    val: object
    opening: list[int]  # token ids every record starts with, run once per batch ([] when too short)


@dataclass
class TrainingSetup:
    """What every training attempt shares; only the model and the batch shape change between attempts."""

    config: TrainConfig
    run_dir: Path
    source: models.ModelSource
    tokenizer: object
    records: Records
    validation: ValidationScoring | None  # None: no eval_f1
    resume_from: Path | None  # the checkpoint to continue from
    main: bool  # False in the other processes of a multi-process run (no files, no TensorBoard of their own)
    progress: bool  # show a progress bar
    callbacks: tuple  # extra transformers TrainerCallbacks


@dataclass
class Fit:
    trainer: object
    output: object  # transformers TrainOutput
    wall_s: float
    batch_size: int  # per device, after any out-of-memory back-off
    grad_accum: int
    backoffs: list[dict]


def write_run_files(run_dir: Path, config: TrainConfig, identity: str, template, train_examples, val_examples):
    runs.write_yaml(run_dir / "config.yaml", to_dict(config))
    runs.write_json(run_dir / "manifest.json", runs.manifest(
        step="train", config_hash=identity, model=config.model, prompt_template=template.name,
        prompt_sha256=template.hash, train_file=config.train_file, train_sha256=file_sha256(config.train_file),
        val_file=config.val_file, val_sha256=file_sha256(config.val_file),
        train_examples_sha256=data.examples_hash(train_examples), n_train=len(train_examples),
        val_examples_sha256=data.examples_hash(val_examples), n_val=len(val_examples),
    ))


def write_results(run_dir: Path, adapter_dir: Path, config: TrainConfig, template, summary: dict) -> None:
    """The adapter's note on how to evaluate it, then training_summary.json (last: it marks the run finished)."""
    runs.write_json(adapter_dir / "hatelens_training.json", {
        "base_model": config.model, "template": config.template, "prompt_sha256": template.hash,
        "note": f"evaluate with the same template: hatelens evaluate --model <this folder> --template "
                f"{config.template}",
    })
    write_model_card(adapter_dir, base_model=config.model, template=config.template,
                     prompt_sha256=template.hash, training=summary)
    for warning in summary["warnings"]:
        logger.warning("%s", warning)
    runs.write_json(run_dir / SUMMARY_FILE, summary)
    logger.info("adapter written to %s", adapter_dir)


def build_records(config: TrainConfig, template, tokenizer, train_examples, val_examples) -> Records:
    train_set = sft_data.build_dataset(train_examples, template, tokenizer,
                                       max_length_tokens=config.max_length_tokens, where=config.train_file)
    val_set = sft_data.build_dataset(val_examples, template, tokenizer,
                                     max_length_tokens=config.max_length_tokens, where=config.val_file)
    opening = sft_data.shared_opening([train_set, val_set])
    if len(opening) < MIN_SHARED_OPENING_TOKENS:
        opening = []
    logger.info("%d training and %d validation records; mean %.1f tokens, of which %d shared by all (run once "
                "per batch)", len(train_set), len(val_set), sum(train_set["length"]) / len(train_set), len(opening))
    return Records(train_set, val_set, opening)


def validation_scoring(val_examples, template, score_texts: TextScorer | None, tokenizer,
                       max_length_tokens: int) -> ValidationScoring | None:
    """What each evaluation scores; None without a scorer. When every answer is one token that score mode
    reads (a label word such as ` hate` or a fine answer's ` offensive`, not a JSON answer), the scoring pass
    gives the validation loss too, each record's from its own answer's column; prompts are then cut exactly as
    the records are (max_length_tokens less the answer's token)."""
    if score_texts is None:
        return None
    column_of = {text: column for column, (_, text) in enumerate(template.scored_answers())}
    answers = [template.answer(example.label, example.extra.get("fine_label")) for example in val_examples]
    one_token = all(answer in column_of for answer in answers) and all(
        len(tokenizer(text, add_special_tokens=False).input_ids) == 1 for text in column_of)
    return ValidationScoring(texts=[example.text for example in val_examples],
                             labels=[example.label for example in val_examples], template=template,
                             score_texts=score_texts, max_length_tokens=max_length_tokens - 1 if one_token else None,
                             answer_columns=[column_of[answer] for answer in answers] if one_token else None)


def fit_with_memory_backoff(setup: TrainingSetup) -> Fit:
    """Train; on out-of-memory, halve the per-device batch and double accumulation (same effective batch)."""
    config, run_dir, resume_from = setup.config, setup.run_dir, setup.resume_from
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    batch_size, grad_accum, backoffs = config.batch_size, config.grad_accum, []
    started = time.perf_counter()
    while True:
        set_seed(config.seed)  # LoRA's initial weights are drawn before Trainer seeds anything
        model = load_base_model(config, setup.source, setup.tokenizer, dtype, device)
        trainer = build_trainer(setup, model, batch_size=batch_size, grad_accum=grad_accum)
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            return Fit(trainer, output, time.perf_counter() - started, batch_size, grad_accum, backoffs)
        except torch.OutOfMemoryError:
            if resume_from is not None:
                raise ModelError(f"out of memory while resuming {run_dir} at per-device batch {batch_size}: its "
                                 "checkpoints were made at this batch size; start a new run (without --resume), "
                                 "which halves the batch automatically") from None
            if batch_size == 1:
                raise ModelError(f"out of memory at batch size 1 training {config.model}; use a smaller model, "
                                 "gradient_checkpointing=true, a shorter template or a larger device") from None
            batch_size, grad_accum = batch_size // 2, grad_accum * 2
            backoffs.append({"batch_size": batch_size, "grad_accum": grad_accum})
            logger.warning("out of memory: per-device batch halved to %d, gradient accumulation doubled to %d "
                           "(same effective batch); restarting training", batch_size, grad_accum)
            del trainer, model
            free_memory()
            if setup.main:
                shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)  # this attempt's, made at the old batch


def check_config(config: TrainConfig, score_texts: TextScorer | None) -> None:
    trackers.parse_report_to(config.report_to)
    if config.best_metric not in BEST_METRICS:
        raise ConfigError(f"best_metric {config.best_metric!r}: choose one of {', '.join(BEST_METRICS)}")
    if config.best_metric == "f1" and score_texts is None:
        raise ConfigError("best_metric f1 needs the validation split scored: call train(..., "
                          "score_texts=hatelens.backends.text_scores.score_texts), as `hatelens train` does")
    if config.dtype == "float16":
        raise ConfigError("dtype float16 is not supported for training (it needs a loss scaler); "
                          "use bfloat16 or float32")
    for name in ("epochs", "batch_size", "grad_accum", "learning_rate"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    if config.lora.target_parameters and config.lora.dropout:
        raise ConfigError("lora.target_parameters (LoRA on expert weights) needs lora.dropout=0 (PEFT cannot apply "
                          f"dropout there); got lora.dropout={config.lora.dropout}")
    if config.lora.layers_to_transform is not None and isinstance(config.lora.target_modules, str):
        raise ConfigError(f"lora.layers_to_transform needs lora.target_modules as a list of module names (PEFT "
                          f"cannot select layers under {config.lora.target_modules!r}), e.g. [q_proj, v_proj]")
    if not 0 <= config.warmup_ratio < 1:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}")


def load_splits(config: TrainConfig) -> tuple[list, list]:
    """Training and validation examples, each optionally a seeded stratified sample."""
    train_examples = data.load_examples(config.train_file).examples
    val_examples = data.load_examples(config.val_file).examples
    if config.max_train_samples:
        train_examples = data.stratified_sample(train_examples, config.max_train_samples, seed=config.seed)
    if config.max_val_samples:
        val_examples = data.stratified_sample(val_examples, config.max_val_samples, seed=config.seed)
    return train_examples, val_examples


def adapter_base_name(model: str) -> str:
    """What the adapter records as its base: an alias or hub id as given, a local folder as an absolute
    path (so `--model runs/x/adapter` finds it from any working directory)."""
    path = Path(model)
    return str(path.resolve()) if model not in models.ALIASES and path.exists() else model


def load_base_model(config: TrainConfig, source, tokenizer, dtype, device):
    """The base model (GGUF aliases from the converted safetensors cache); fp32 on CPU, bf16 on GPU."""
    kwargs = {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.dequantize_mxfp4:
        from transformers import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    model = models.load_model(source, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code,
                              tokenizer=tokenizer, **kwargs)
    model.config.use_cache = False  # no key/value cache while training (gradient checkpointing needs it off)
    use_gpu_speedups(model, inference=False, compile_gate=config.compile_expert_gate,
                     recompute_gate=config.recompute_expert_gate)
    model.name_or_path = adapter_base_name(config.model)  # PEFT copies it into adapter_config.json
    return model


def build_trainer(setup: TrainingSetup, model, *, batch_size: int, grad_accum: int) -> AnswerSFTTrainer:
    """TRL's trainer for one attempt: the recipe's knobs as SFTConfig, the LoRA adapter, the callbacks."""
    config, run_dir = setup.config, setup.run_dir
    metric, greater_is_better = BEST_METRICS[config.best_metric]
    strategy = "steps" if config.eval_steps else "epoch"
    args = SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all optimizer steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        train_sampling_strategy="group_by_length",  # batches of similar length: little padding
        eval_strategy=strategy, save_strategy=strategy, eval_steps=config.eval_steps, save_steps=config.eval_steps,
        eval_on_start=config.eval_on_start,
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=greater_is_better,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps, logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, so LossGuard can stop the run
        seed=config.seed, data_seed=config.seed,
        bf16=model.dtype == torch.bfloat16, use_cpu=pick_device(config.device) == "cpu",
        activation_checkpointing=config.gradient_checkpointing,  # (transformers' new name for it)
        max_length=None,  # records are checked against max_length_tokens instead of being cut
        # TensorBoard (into the run folder) and the progress bar are added below; other trackers by TRL's name
        report_to=[name for name in trackers.parse_report_to(config.report_to) if name != "tensorboard"] or "none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        router_aux_loss_coef=0.0,  # MoE (gpt-oss): the router is frozen under LoRA; no load-balancing loss
    )
    lora = peft.LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, target_parameters=config.lora.target_parameters,
        layers_to_transform=config.lora.layers_to_transform, bias="none", task_type="CAUSAL_LM",
    )
    trainer_callbacks = [TrainingProgress(show_bar=setup.progress), LossGuard(learning_rate=config.learning_rate)]
    if setup.main and "tensorboard" in trackers.parse_report_to(config.report_to):  # one process writes TensorBoard
        trainer_callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(str(run_dir / TENSORBOARD_DIR))))
    if config.early_stopping_patience:
        trainer_callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = AnswerSFTTrainer(
        model=model, args=args, train_dataset=setup.records.train, eval_dataset=setup.records.val,
        processing_class=setup.tokenizer, peft_config=lora, callbacks=trainer_callbacks + list(setup.callbacks),
        validation=setup.validation, shared_opening=setup.records.opening,
        # the budget shrinks with the batch on out-of-memory back-off (batch_size halved)
        max_batch_tokens=config.max_batch_tokens and config.max_batch_tokens * batch_size // config.batch_size,
    )
    trainer.remove_callback(PrinterCallback)  # TrainingProgress logs instead of printing raw dicts
    return trainer


class run_log:
    """Copy hatelens' log lines (INFO and up) into the run's train.log while training runs. path None (the
    other processes of a multi-process run): no file, and only warnings and errors reach the console."""

    def __init__(self, path: Path | None):
        self.handler = None
        if path is not None:
            self.handler = logging.FileHandler(path, encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self.handler.setLevel(logging.INFO)
        self.logger = logging.getLogger("hatelens")
        self.level = self.logger.level

    def __enter__(self):
        if self.handler is None:
            self.logger.setLevel(logging.WARNING)
        else:
            self.logger.addHandler(self.handler)
            if self.logger.getEffectiveLevel() > logging.INFO:
                self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info):
        self.logger.setLevel(self.level)
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.handler.close()
