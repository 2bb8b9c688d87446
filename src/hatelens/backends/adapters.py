"""What a LoRA adapter folder says about how to use it: its base model and prompt template are the defaults.

`hatelens train` writes hatelens_training.json beside the adapter (base model as given, the template it was
trained with) and PEFT writes adapter_config.json (base_model_name_or_path). An adapter scored through
another template gives quietly wrong numbers, and one attached to another base model is meaningless, so:
- no template given: the adapter's recorded one (baseline without an adapter or a record);
- a different template given: a ConfigError, unless force_template;
- no model given: the adapter's base; a different base given: a ModelError.
"""

import dataclasses
import json
from pathlib import Path

from hatelens.backends import models, prompts
from hatelens.errors import ConfigError, ModelError

TRAINING_INFO = "hatelens_training.json"
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_TEMPLATE = "baseline"


def adapter_dir(config) -> str | None:
    """The adapter folder of a ModelConfig: --adapter, or --model when it names an adapter folder."""
    if config.adapter:
        return config.adapter
    return config.model if config.model and models.is_adapter_dir(config.model) else None


def training_info(adapter: str) -> dict:
    """hatelens_training.json of an adapter folder; {} when the adapter was not trained by hatelens."""
    path = Path(adapter) / TRAINING_INFO
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise ConfigError(f"{path}: not valid JSON; re-save the adapter with `hatelens train` or delete the file") \
            from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: must be a JSON object with base_model and template")
    return values


def resolve(config) -> tuple[object, str]:
    """(the ModelConfig with model and template filled in, where the template came from): checked against
    the adapter's record. Idempotent: a resolved config resolves to itself."""
    adapter = adapter_dir(config)
    if adapter is None:
        template = config.template or DEFAULT_TEMPLATE
        return dataclasses.replace(config, model=config.model or DEFAULT_MODEL, template=template), \
            "given" if config.template else "default"
    info = training_info(adapter)
    model = config.model  # --model ADAPTER: loading takes the base from the adapter folder
    if config.adapter and config.model:
        _check_base(adapter, config.model, info)
    elif config.adapter:
        model = info.get("base_model") or models.adapter_base(adapter)
    template, origin = _template(adapter, config, info)
    return dataclasses.replace(config, model=model, template=template), origin


def _template(adapter: str, config, info: dict) -> tuple[str, str]:
    recorded = info.get("template")
    if not recorded:
        return config.template or DEFAULT_TEMPLATE, "given" if config.template else "default"
    if not config.template:
        return recorded, f"adapter ({Path(adapter) / TRAINING_INFO})"
    if _same_template(config.template, info):
        return config.template, "given (the adapter's own template)"
    if not config.force_template:
        raise ConfigError(f"adapter {adapter} was trained with template {recorded}, not {config.template}; "
                          f"drop --template to use {recorded}, or add --force-template to score with {config.template}")
    return config.template, f"given, forced (the adapter was trained with {recorded})"


def _check_base(adapter: str, model: str, info: dict) -> None:
    """--model must be the base the adapter was trained on (as hatelens_training.json or PEFT recorded it)."""
    recorded = [name for name in (info.get("base_model"), _peft_base(adapter)) if name]
    if recorded and not any(_same_model(model, name) for name in recorded):
        raise ModelError(f"adapter {adapter} was trained on base model {recorded[0]}, not {model}; "
                         f"pass --model {recorded[0]} (or leave --model out)")


def _peft_base(adapter: str) -> str | None:
    try:
        return models.adapter_base(adapter)
    except ModelError:
        return None  # no base recorded: nothing to check against (loading reports a broken adapter_config.json)


def _same_model(given: str, recorded: str) -> bool:
    """Same alias / hub id, or the same folder however it is spelled."""
    if given == recorded:
        return True
    given_path, recorded_path = Path(given), Path(recorded)
    return given_path.exists() and recorded_path.exists() and given_path.resolve() == recorded_path.resolve()


def _same_template(given: str, info: dict) -> bool:
    """The same name as recorded, or a template whose text is the recorded one (its hash)."""
    if given == info["template"]:
        return True
    return bool(info.get("prompt_sha256")) and prompts.load_template(given).hash == info["prompt_sha256"]
