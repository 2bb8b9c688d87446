"""The allowed range of every numeric knob of the config dataclasses, and the allowed values of the string
knobs listed in CHOICES, checked as a config is loaded.

Every float must be finite (NaN compares false with everything, so a NaN threshold would quietly
decide nothing); the table below adds each knob's own range. A value out of range is a ConfigError
naming the key, so `--batch-size 0` stops before any model loads.
"""

import math
from dataclasses import dataclass

from hatelens.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    low: float | None = None
    high: float | None = None
    above: bool = False  # `low` itself is not allowed (a learning rate > 0)

    def allows(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.above and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.above else '>='} {self.low:g}"
        return f"between {self.low:g} and {self.high:g}"


AT_LEAST_0, AT_LEAST_1, POSITIVE, PROBABILITY = Bound(0), Bound(1), Bound(0, above=True), Bound(0, 1)
SHARED = {"batch_size": AT_LEAST_1, "max_batch_tokens": AT_LEAST_1, "n_bootstrap": AT_LEAST_0,
          "threshold": PROBABILITY, "max_group_fpr": PROBABILITY, "seed": AT_LEAST_0}
BOUNDS = {
    "ModelConfig": {"max_new_tokens": AT_LEAST_1, "max_length_tokens": AT_LEAST_1, "max_concurrency": AT_LEAST_1,
                    "timeout_s": POSITIVE, "max_retries": AT_LEAST_0},
    "EvalConfig": {"max_samples": AT_LEAST_1, "target_f1": PROBABILITY},
    "ServeLimits": {"max_body_bytes": AT_LEAST_1, "max_texts": AT_LEAST_1, "max_text_chars": AT_LEAST_1,
                    "max_text_tokens": AT_LEAST_1, "max_batch_texts": AT_LEAST_1, "max_wait_ms": AT_LEAST_0,
                    "batch_timeout_s": POSITIVE},
    "ServeConfig": {"port": Bound(1, 65535)},
    "MonitorConfig": {"max_group_flagged_rate": PROBABILITY, "max_psi": AT_LEAST_0, "min_rows": AT_LEAST_1,
                      "min_feedback": AT_LEAST_1, "psi_bins": Bound(2)},
    "CriteriaConfig": {"baseline_f1_expected": PROBABILITY, "baseline_f1_tolerance": PROBABILITY,
                       "finetuned_f1_min": PROBABILITY, "improvement_f1_min": Bound(-1, 1),
                       "significance_alpha": Bound(0, 1, above=True)},
    "RunConfig": {"validation_samples": AT_LEAST_1, "test_samples": AT_LEAST_1, "suite_samples": AT_LEAST_1},
    "LoraConfig": {"r": AT_LEAST_1, "alpha": POSITIVE, "dropout": Bound(0, 0.999)},
    "AugmentConfig": {"neutral_per_group": AT_LEAST_0, "counter_speech_per_group": AT_LEAST_0,
                      "negation_per_group": AT_LEAST_0},
    "TrainConfig": {"max_train_samples": AT_LEAST_1, "max_val_samples": AT_LEAST_1, "epochs": POSITIVE,
                    "grad_accum": AT_LEAST_1, "eval_batch_size": AT_LEAST_1, "learning_rate": POSITIVE,
                    "warmup_ratio": PROBABILITY, "weight_decay": AT_LEAST_0, "max_grad_norm": POSITIVE,
                    "early_stopping_patience": AT_LEAST_1, "eval_steps": AT_LEAST_1, "save_total_limit": AT_LEAST_1,
                    "logging_steps": AT_LEAST_1, "max_length_tokens": AT_LEAST_1},
}

# ModelConfig.reference_kind -> what that reference is (the name reports and the CLI show)
REFERENCE_KINDS = {"logistic": "MiniLM-L6 + logistic regression", "finetuned": "MiniLM-L6 fully fine-tuned"}
# String knobs checked when a config is loaded (others are checked where they are used)
CHOICES = {"ModelConfig": {"reference_kind": tuple(REFERENCE_KINDS)}}


def check_choice(kind: str, name: str, value: object, where: str) -> None:
    """ConfigError unless `value` is one of the allowed values of a CHOICES knob (other knobs pass)."""
    allowed = CHOICES.get(kind, {}).get(name)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(allowed)}")


def check_bound(kind: str, name: str, value: object, where: str) -> None:
    """ConfigError unless `value` (already of the field's type) is finite and within the field's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a number; give a finite value")
    bound = BOUNDS.get(kind, {}).get(name) or SHARED.get(name)
    if bound is not None and not bound.allows(value):
        raise ConfigError(f"{where}: {value!r} is out of range; it must be {bound.describe()}")
