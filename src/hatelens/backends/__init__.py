"""Backends turn texts into scores or answers. Picked by name; imported lazily so `--help` is instant."""

from importlib import import_module

from hatelens.errors import ConfigError

# name -> "module:factory"; each factory is `create(config) -> Classifier`
BACKENDS = {
    "hf": "hatelens.backends.hf:create",
    "reference": "hatelens.backends.reference:create",
    "openai": "hatelens.backends.openai_compat:create",
}


def create_backend(name: str, config):
    """Build the backend called `name` from a ModelConfig."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    module_name, factory = BACKENDS[name].split(":")  # hf and openai fill an adapter's defaults themselves
    return getattr(import_module(module_name), factory)(config)
