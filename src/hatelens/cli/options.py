"""Options several commands share, with the seed scripts' underscore spellings as aliases."""

import argparse
import dataclasses
import typing


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "--model_name", "--model-name", "--base_model", "--base-model", dest="model",
                       help="alias (smollm2-135m, gemma3-270m, gpt-oss-20b, gpt-oss-120b), folder, .gguf file, "
                            "hub id, or a PEFT adapter folder")
    group.add_argument("--adapter", "--lora_adapter", "--lora-adapter", dest="adapter",
                       help="PEFT adapter folder (base model from --model or the adapter's config)")
    group.add_argument("--backend", help="hf (default) | reference | openai")
    group.add_argument("--mode", choices=("score", "generate"), help="score (default) or generate")
    group.add_argument("--template", help="prompt template name (baseline, policy_persona) or YAML path")
    group.add_argument("--force-template", "--force_template", dest="force_template", action="store_true",
                       default=None, help="score an adapter through --template although it was trained with another")
    group.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int)
    group.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int)
    group.add_argument("--device", help="auto (default) | cpu | cuda")
    group.add_argument("--dtype", help="auto (default) | float32 | bfloat16 | float16")
    group.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true", default=None,
                       help="run code shipped in the model folder (off unless given)")
    group.add_argument("--base-url", "--base_url", dest="base_url", help="openai backend: server URL")
    group.add_argument("--max-concurrency", "--max_concurrency", dest="max_concurrency", type=int)
    group.add_argument("--api-key-env", dest="api_key_env", help="name of the variable holding the API key")
    group.add_argument("--api-version", "--api_version", dest="api_version",
                       help="Azure OpenAI: api-version (e.g. 2024-10-21); key from AZURE_OPENAI_API_KEY")
    group.add_argument("--deployment", help="Azure OpenAI: deployment name (default: --model)")
    group.add_argument("--reasoning-effort", dest="reasoning_effort", choices=("low", "medium", "high"))


MODEL_KEYS = ("model", "adapter", "backend", "mode", "template", "batch_size", "max_new_tokens", "device", "dtype",
              "trust_remote_code", "base_url", "max_concurrency", "api_key_env", "reasoning_effort", "api_version",
              "deployment", "force_template")


def model_values(args: argparse.Namespace) -> dict:
    """The model flags the user actually gave, as a config mapping."""
    return {key: getattr(args, key) for key in MODEL_KEYS if getattr(args, key, None) is not None}


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any recipe field, e.g. model.batch_size=8")


# -- flags for config fields: the dataclass in config.py is the one definition of a knob (name, type,
# default); a flag adds only its spellings -------------------------------------------------------------


def field_spec(cls, key: str) -> tuple[type, object]:
    """(scalar type, default) of the dataclass field `key` (dotted for nested sections, e.g. lora.r)."""
    *parents, leaf = key.split(".")
    for parent in parents:
        cls = typing.get_type_hints(cls)[parent]
    kind = typing.get_type_hints(cls)[leaf]
    scalar = next(option for option in (typing.get_args(kind) or (kind,)) if option is not type(None))
    (field,) = [field for field in dataclasses.fields(cls) if field.name == leaf]
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return scalar, default


def add_config_flags(parser: argparse.ArgumentParser, cls, aliases: dict[str, tuple[str, ...]]) -> None:
    """One flag per key of `aliases` (a field of dataclass `cls`): --kebab-case, --snake_case, then the
    extra spellings; typed and described from the dataclass. The parsed value lands in dest key_with_underscores."""
    for key, extra in aliases.items():
        name = key.replace(".", "_")
        flags = dict.fromkeys((f"--{name.replace('_', '-')}", f"--{name}", *extra))  # ordered, no repeats
        kind, default = field_spec(cls, key)
        described = f"recipe key {key}" + ("" if default is None else f" (default {default})")
        parser.add_argument(*flags, dest=name, type=kind, help=described)


def config_flag_values(args: argparse.Namespace, keys) -> dict:
    """The flags the user gave, as a nested config mapping ({"lora": {"r": 8}} for lora.r)."""
    values: dict = {}
    for key in keys:
        value = getattr(args, key.replace(".", "_"))
        if value is None:
            continue
        *parents, leaf = key.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return values
