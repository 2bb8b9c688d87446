"""One dataclass per stage, loaded from YAML recipes with `key=value` overrides.

The dataclasses hold the defaults; recipes mirror them. An unknown key is a ConfigError that lists
the valid ones, so a typo never silently falls back to a default.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hatelens import resources
from hatelens.config.bounds import check_bound, check_choice
from hatelens.data.labels import GROUPS
from hatelens.errors import ConfigError

# Defaults several stages share, named once.
DEFAULT_THRESHOLD = 0.5  # score >= this is "hate" unless calibrated thresholds say otherwise
DEFAULT_MAX_GROUP_FPR = 0.35  # the seed's LGBTQ+ FPR criterion; also the calibration cap
DEFAULT_MAX_GROUP_FNR = 0.25  # issue 13's FNR budget, for calibration: group_budget
N_BOOTSTRAP = 1000  # resamples behind every bootstrap interval
CONFIDENCE = 0.95  # of every bootstrap interval
TARGET_F1 = 0.615  # the "target to beat" line of an evaluation summary


@dataclass
class ModelConfig:
    """Which model answers and how it is asked."""

    model: str | None = None  # alias, local folder, GGUF file or hub id; None: the adapter's base, else smollm2-135m
    adapter: str | None = None  # PEFT adapter folder
    backend: str = "hf"  # hf | reference | openai
    mode: str = "score"  # score: compare label-word log-probs; generate: parse a generated answer
    template: str | None = None  # a name in configs/prompts/ or a YAML path; None: the adapter's own, else baseline
    force_template: bool = False  # score an adapter through another template than the one it was trained with
    batch_size: int = 16  # rows per batch (with max_batch_tokens: the most rows a batch may hold)
    max_batch_tokens: int | None = None  # padded tokens per batch (GPU: fit to the card); None: rows (serve: limits')
    # gpt-oss on CUDA: torch.compile the experts' gate (off: 3-7 s a process for 0.07-0.36 s per 1,009 texts)
    compile_expert_gate: bool = False
    max_new_tokens: int = 16  # generate mode; gpt-oss reasoning needs a few hundred
    max_length_tokens: int = 2048  # a longer prompt has its post cut (start kept), the instructions whole
    device: str = "auto"  # auto | cpu | cuda
    # hf on CUDA: single (one GPU) | split (decoder layers over every visible GPU, for a model no card holds) |
    # auto (split when the weights pass 80% of one card's free memory and several GPUs are visible)
    placement: str = "auto"
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    trust_remote_code: bool = False  # never on unless asked: it runs code from the model folder
    revision: str | None = None
    # openai-compatible backend
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable holding the key (Azure: AZURE_OPENAI_API_KEY)
    api_version: str | None = None  # Azure OpenAI: the api-version query parameter (e.g. 2024-10-21); turns Azure on
    deployment: str | None = None  # Azure OpenAI: the deployment name (default: model)
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 5
    reasoning_effort: str | None = None  # gpt-oss: low | medium | high
    cache_dir: str | None = None  # response cache for API backends
    # reference backend
    reference_train: str = "data/train.jsonl"  # the 3,083 training rows: never the validation or test rows
    reference_kind: str = "logistic"  # logistic (frozen MiniLM-L6 + logistic regression) | finetuned (all of it)


@dataclass
class EvalConfig:
    """`hatelens baseline` / `hatelens evaluate`."""

    data: str = "data/unified/unified_test.json"
    output_dir: str = "runs"
    name: str | None = None  # run folder suffix; default: model + template
    format: str | None = None  # json | jsonl | csv | hatecheck; default from the file suffix
    text_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    skip_empty_texts: bool = False  # drop rows with empty text (recorded as a warning) instead of failing
    max_samples: int | None = None  # a seeded sample stratified by label x group
    seed: int = 0
    threshold: float = DEFAULT_THRESHOLD
    thresholds: str | None = None  # thresholds.json from `hatelens calibrate`
    target_f1: float = TARGET_F1  # the "target to beat" line of the summary
    n_bootstrap: int = N_BOOTSTRAP
    report_to: list[str] | str = "none"  # also log the metrics to: tensorboard | mlflow | wandb | none (or a list)
    model: ModelConfig = field(default_factory=ModelConfig)


def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls, values: dict, *, where: str = "config"):
    """Build dataclass `cls` from a mapping; nested dataclasses from nested mappings."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(types)}"
        )
    kwargs = {}
    for name, value in values.items():
        kind = types[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(kind, value or {}, where=f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}.{name}")
            check_bound(cls.__name__, name, kwargs[name], f"{where}.{name}")
            check_choice(cls.__name__, name, kwargs[name], f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value, kind, where: str):
    """Check a scalar against its annotated type; ints pass where floats are expected."""
    if value is None:
        if type(None) in typing.get_args(kind):
            return None
        raise ConfigError(f"{where}: may not be empty")
    if typing.get_origin(kind) in (dict, list):  # a mapping or list whose entries the stage checks itself
        if isinstance(value, typing.get_origin(kind)):
            return value
        raise ConfigError(f"{where}: expected a {typing.get_origin(kind).__name__}, got {value!r}")
    allowed = [t for t in (typing.get_args(kind) or (kind,)) if t is not type(None)]
    origin_allowed = [typing.get_origin(t) or t for t in allowed]
    if float in origin_allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in origin_allowed and str not in origin_allowed and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if any(isinstance(value, t) for t in origin_allowed if isinstance(t, type)):
        if bool not in origin_allowed and isinstance(value, bool) and int in origin_allowed:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{where}: expected {names}, got {value!r}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `key=value` (dotted keys for nested sections) to a raw mapping; values parsed as YAML."""
    result = dict(values)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value (for example lora.r=16)")
        key, raw = override.split("=", 1)
        target = result
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target[parent] = dict(target.get(parent) or {})
            target = target[parent]
        try:
            target[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {override!r}: {raw!r} is not a YAML value; quote a string "
                              f"({key}='\"...\"') or give a number, true/false or [a, b]") from None
    return result


def read_yaml(path: str | Path) -> dict:
    """Read a recipe; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; recipes live in configs/ (e.g. configs/lora/cpu_small.yaml)")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values")
    return values


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None):
    """Defaults <- recipe file <- `base` (e.g. CLI flags) <- `key=value` overrides.

    `path` may be a shipped recipe's name (`cpu_small`, `default`). Relative paths inside a user's
    recipe file start from that file's folder; those in flags and overrides from the current folder.
    """
    values = {}
    if path:
        kind = RECIPE_KINDS.get(cls.__name__)
        path = resources.find(kind, path) if kind else Path(path)
        values = resolve_paths(cls, read_yaml(path), path)
    values = _merge(values, base or {})
    values = apply_overrides(values, overrides or [])
    return from_dict(cls, values, where=str(path) if path else "config")


def resolve_paths(cls, values: dict, recipe: Path) -> dict:
    """The input paths a recipe names (PATH_FIELDS), made relative to the recipe's folder."""
    resolved = dict(values)
    types = _field_types(cls)
    for key, value in values.items():
        kind = types.get(key)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            resolved[key] = resolve_paths(kind, value, recipe)
        elif key in PATH_FIELDS.get(cls.__name__, ()) and isinstance(value, str):
            resolved[key] = resources.relative_to_recipe(value, recipe)
    return resolved


def _merge(low: dict, high: dict) -> dict:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


@dataclass
class ServeLimits:
    """`hatelens serve`'s bounds: the largest request answers in 10 s on 2 CPU cores beside 4 clients (serving.md)."""

    max_body_bytes: int = 1_000_000  # a larger request body gets 413
    max_texts: int = 6  # texts in one request; more get 422
    max_text_chars: int = 10_000  # a longer text gets 422 (checked before any tokenizing)
    max_text_tokens: int = 96  # a post longer in the model's tokens is cut to its start ("truncated"); test posts fit
    max_batch_texts: int = 32  # concurrent requests are merged into one forward pass up to this many texts
    max_batch_tokens: int = 256  # ... and post tokens (padded, per pass); while others wait, a request takes its share
    max_wait_ms: float = 10.0  # how long a batch waits for company once its first request arrived
    batch_timeout_s: float = 60.0  # a forward pass running longer answers its requests 503


@dataclass
class ServeConfig:
    """`hatelens serve`: the classifier behind HTTP, every prediction logged."""

    host: str = "127.0.0.1"  # 0.0.0.0 accepts connections from other machines
    port: int = 8000
    db: str = "predictions.sqlite"  # SQLite prediction log (WAL mode)
    thresholds: str | None = None  # thresholds.json from `hatelens calibrate`
    threshold: float = DEFAULT_THRESHOLD  # used when no thresholds file is given
    log_text: bool = False  # store the texts themselves in the log, not only their SHA-256
    api_key_env: str = "HATELENS_API_KEY"  # when this variable is set, requests need "Authorization: Bearer <key>"
    metric_groups: str = ",".join(GROUPS)  # groups named in /metrics; others count as "other"
    limits: ServeLimits = field(default_factory=ServeLimits)
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class MonitorConfig:
    """`hatelens monitor`: windows over the prediction log, per-group rates, drift, alerts."""

    db: str = "predictions.sqlite"
    reference: str | None = None  # run folder (or its predictions.jsonl) whose scores are the expected distribution
    window: str = "1d"  # window length: 30m, 6h, 1d, 1w
    since: str | None = None  # only predictions newer than this: a duration back from now (7d) or a UTC date
    max_group_fpr: float = 0.30  # alert when a group's FPR on reviewed predictions exceeds this
    max_group_flagged_rate: float = 0.60  # alert when a group's share of "hate" predictions exceeds this
    max_psi: float = 0.20  # alert when score drift exceeds this (PSI > 0.2 is the usual "shifted" line)
    min_rows: int = 30  # rates and drift from fewer rows in a window are shown but never alert
    min_feedback: int = 20  # FPR needs at least this many reviewed normal posts in the group and window
    psi_bins: int = 10  # drift bins: quantiles of the reference scores


@dataclass
class CriteriaConfig:
    """`hatelens compare --criteria`: what "fine-tuning worked" means (configs/criteria/default.yaml)."""

    baseline_f1_expected: float | None = None  # the baseline F1 you expect (e.g. a published figure); None: not checked
    baseline_f1_tolerance: float = 0.01  # |baseline F1 - expected| must stay within this
    finetuned_f1_min: float | None = 0.620  # the fine-tuned F1 must reach this; None: not checked
    improvement_f1_min: float | None = 0.005  # ΔF1 must reach this AND McNemar p < significance_alpha
    significance_alpha: float = 0.05
    # the fine-tuned model's FPR must stay below each group's cap (None: not checked); the seed caps LGBTQ+ only
    group_fpr_max: dict[str, float | None] = field(
        default_factory=lambda: {group: DEFAULT_MAX_GROUP_FPR if group == "lgbtq" else None for group in GROUPS})
    validation_loss_must_improve: bool = True  # last validation loss of training < its first


@dataclass
class RunConfig:
    """`hatelens run`: the whole validation, baseline -> fine-tune -> calibrate -> test -> compare -> report."""

    name: str = "default"
    output_dir: str = "runs"
    model: str = "smollm2-135m"  # the base model every step uses
    template: str = "baseline"  # the prompt template every step uses (training renders with it too)
    batch_size: int = 16  # evaluation batch size (with max_batch_tokens: the most rows a batch may hold)
    max_batch_tokens: int | None = None  # evaluation: padded tokens computed per batch; None: rows only
    placement: str = "auto"  # evaluation on CUDA: auto | single | split (ModelConfig.placement)
    train_recipe: str = "configs/lora/cpu_small.yaml"
    train_overrides: list = field(default_factory=list)  # key=value applied to the recipe
    # >1: the training step runs as `accelerate launch --num_processes N` with train_accelerate_config (FSDP over
    # the host's GPUs, for a model no card holds); the evaluation steps stay in this process
    train_processes: int = 1
    train_accelerate_config: str = "configs/accelerate/fsdp.yaml"
    train_data: str = "data/train.jsonl"
    validation_data: str = "data/validation.jsonl"
    test_data: str = "data/unified/unified_test.json"
    calibration: str = "f1"  # thresholds picked on validation scores: f1 | max_group_fpr | group_budget | equalize_fpr
    max_group_fpr: float = DEFAULT_MAX_GROUP_FPR  # the FPR cap when calibration is max_group_fpr or group_budget
    max_group_fnr: float = DEFAULT_MAX_GROUP_FNR  # the FNR cap when calibration is group_budget
    criteria: str = "configs/criteria/default.yaml"
    reference: bool = True  # also score the MiniLM + logistic-regression reference on the test split
    # ... and MiniLM-L6 fully fine-tuned: off, its training alone took 3-19 min on 2 CPU cores (docs/quality.md)
    reference_finetuned: bool = False
    functional_suite: str | None = "suites/functional/hatelens_functional.csv"
    validation_samples: int | None = None  # stratified samples; None: every row (--quick sets them)
    test_samples: int | None = None
    suite_samples: int | None = None
    seed: int = 0
    n_bootstrap: int = N_BOOTSTRAP
    report_to: list[str] | str = "none"  # every step's metrics and the verdict also go to: tensorboard | mlflow | wandb


@dataclass
class LoraConfig:
    """The `lora:` section of a training recipe (mirrors peft.LoraConfig)."""

    r: int = 32  # rank of the low-rank update
    alpha: int = 64  # scaling: the update is multiplied by alpha / r
    dropout: float = 0.1  # dropout on the LoRA input
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    target_parameters: list[str] | None = None  # gpt-oss experts, e.g. [mlp.experts.gate_up_proj, mlp.experts.down_proj]
    layers_to_transform: list[int] | None = None  # adapted layers (from 0; None: all); none below needs a backward


@dataclass
class AugmentConfig:
    """The `augment:` section of a training recipe: additions to the training split (data/augment.py)."""

    counterfactual: bool = False  # copy each post naming one group with its identity terms swapped to another
    neutral_per_group: int = 0  # non-hateful posts naming each group (frames + the split's own normal posts)
    counter_speech_per_group: int = 0  # each group's hateful posts quoted in a frame that rejects them (normal)
    negation_per_group: int = 0  # denied stereotypes (normal) + half as many denied dignities (hate) per group
    balance_labels: bool = False  # repeat the rarer label within each group until both labels are as frequent
    fine_label_repeats: dict[str, int] = field(default_factory=dict)  # {offensive: 2}: posts of a finer label x2
    seed: int = 0


@dataclass
class TrainConfig:
    """`hatelens train`: LoRA fine-tuning on the training split, validated each epoch."""

    model: str = "smollm2-135m"  # alias, local folder or hub id; recorded in the adapter as given
    template: str = "baseline"  # the prompt template; evaluate the adapter with the same one
    train_file: str = "data/train.jsonl"
    val_file: str = "data/validation.jsonl"
    output_dir: str = "runs"
    name: str | None = None  # run folder suffix; default: train_<model>
    max_train_samples: int | None = None  # a seeded sample stratified by label x group (quick tests)
    max_val_samples: int | None = None
    epochs: float = 3.0
    batch_size: int = 4  # per device; halved on out-of-memory, with grad_accum doubled
    max_batch_tokens: int | None = None  # padded tokens a length-grouped batch after the shared opening; None: rows
    grad_accum: int = 2  # gradient accumulation steps: effective batch = batch_size x grad_accum
    eval_batch_size: int = 16
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05  # share of all optimizer steps spent warming up
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    best_metric: str = "loss"  # loss (validation loss) | f1 (validation F1 of P(hate), score mode)
    early_stopping_patience: int | None = 2  # evaluations without improvement before stopping; None: never
    eval_steps: int | None = None  # evaluate and checkpoint every N optimizer steps; None: every epoch
    eval_on_start: bool = True  # validate the untrained model too: the "before" line of the summary
    save_total_limit: int = 2  # checkpoints kept (the best one is always kept)
    logging_steps: int = 10
    seed: int = 0
    max_length_tokens: int = 1024  # a longer record has its post cut (start kept), never instructions or answer
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16
    gradient_checkpointing: bool = False  # trade compute for memory (large models)
    attn_implementation: str | None = None  # e.g. eager (gpt-oss: attention sinks)
    dequantize_mxfp4: bool = False  # gpt-oss: load MXFP4 weights dequantised to bf16 for training
    compile_expert_gate: bool = False  # gpt-oss, CUDA: off (66 s to compile for ~9 s an epoch); gate recomputed
    recompute_expert_gate: bool = True
    trust_remote_code: bool = False
    report_to: list[str] | str = "tensorboard"  # training curves go to: tensorboard | mlflow | wandb | none (or a list)
    lora: LoraConfig = field(default_factory=LoraConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # off unless asked


# Which recipe kind a `--config` name is looked up in (resources.KINDS).
RECIPE_KINDS = {"TrainConfig": "lora", "RunConfig": "run", "CriteriaConfig": "criteria", "SweepConfig": "sweeps"}
# Input paths a recipe may name; relative ones start from the recipe file's folder (outputs stay in the
# current folder; `model` is not here: "org/name" is a hub id, not a path).
PATH_FIELDS = {
    "ModelConfig": ("adapter", "template", "reference_train"),
    "EvalConfig": ("data", "thresholds"),
    "ServeConfig": ("thresholds",),
    "MonitorConfig": ("reference",),
    "RunConfig": ("template", "train_recipe", "train_data", "validation_data", "test_data", "criteria",
                  "functional_suite", "train_accelerate_config"),
    "TrainConfig": ("template", "train_file", "val_file"),
    "SweepConfig": ("recipe",),  # (hatelens.sweep)
}
