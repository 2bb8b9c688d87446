"""Files that ship inside the package: prompt templates, recipes, criteria, the functional suite.

They live in src/hatelens/configs/ (a `configs` link at the repository root points there, so the
README's `--config configs/lora/cpu_small.yaml` works in a checkout). A recipe is named either by
its name (`cpu_small`, `compact`, `default`: looked up in the package) or by a path. A path is read
where it points; a path that starts with `configs/` or `suites/` and does not exist in the current
folder is the packaged file of that name, so commands copied from the README work from any folder.
"""

from importlib import resources
from pathlib import Path

from hatelens.errors import ConfigError

# kind -> (folder inside the package, file suffix)
KINDS = {
    "prompts": ("configs/prompts", ".yaml"),
    "lora": ("configs/lora", ".yaml"),
    "run": ("configs/run", ".yaml"),
    "criteria": ("configs/criteria", ".yaml"),
    "accelerate": ("configs/accelerate", ".yaml"),
    "sweeps": ("configs/sweeps", ".yaml"),
    "suites": ("configs/suites/functional", ".yaml"),
}
# the repository's folder names -> their place inside the package
ALIASES = {"configs": "configs", "suites": "configs/suites"}


def package_root() -> Path:
    """The installed `hatelens` package folder (an ordinary folder: the wheel is never zipped)."""
    return Path(str(resources.files("hatelens")))


def shipped(kind: str) -> list[str]:
    """The names of the packaged files of one kind, e.g. shipped("lora") -> ["cpu_small", ...]."""
    folder, suffix = KINDS[kind]
    return sorted(path.stem for path in (package_root() / folder).glob(f"*{suffix}"))


def is_name(value: str) -> bool:
    """`cpu_small` is a name; `my.yaml`, `./x` and `runs/a/b` are paths."""
    return "/" not in value and "\\" not in value and not Path(value).suffix


def is_packaged(path: str | Path) -> bool:
    """Whether a file lies inside the package's configs/ (also when reached through the root link)."""
    configs = (package_root() / "configs").resolve()
    return Path(path).resolve().is_relative_to(configs)


def find(kind: str, value: str | Path) -> Path:
    """The file a recipe name or path stands for; ConfigError listing the shipped names when none."""
    text = str(value)
    folder, suffix = KINDS[kind]
    if is_name(text):
        path = package_root() / folder / f"{text}{suffix}"
        if path.is_file():
            return path
        raise ConfigError(f"no shipped {kind} recipe named {text!r}; shipped: {', '.join(shipped(kind))}, "
                          "or pass a path to a YAML file")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    packaged = packaged_equivalent(path)
    if packaged is not None and packaged.is_file():
        return packaged
    raise ConfigError(f"{kind} file {text} not found (relative paths start from {Path.cwd()}); "
                      f"shipped {kind}: {', '.join(shipped(kind))}")


def packaged_equivalent(path: Path) -> Path | None:
    """configs/lora/x.yaml or suites/functional/y.csv -> that file inside the package (None for other paths)."""
    if path.is_absolute() or not path.parts or path.parts[0] not in ALIASES:
        return None
    return package_root() / ALIASES[path.parts[0]] / Path(*path.parts[1:])


def relative_to_recipe(value: str | None, recipe: Path) -> str | None:
    """A path named inside a user's recipe file, resolved from that file's folder.

    Names (`compact`, `cpu_small`), absolute paths and paths inside packaged recipes (which name data
    relative to the folder the command runs in) are returned as they are.
    """
    if value is None or is_name(str(value)) or Path(value).expanduser().is_absolute() or is_packaged(recipe):
        return value
    if packaged_equivalent(Path(value)) is not None and not (recipe.parent / value).exists():
        return value  # configs/... or suites/...: the packaged file, found by `find`
    return str((recipe.parent / value).resolve())
