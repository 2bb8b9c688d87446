"""Files written whole or not at all, with the mode any new file gets; file hashes.

Every result file (predictions, metrics, reports, splits, adapters' notes) goes through `write_atomic`:
a temporary file beside the target, flushed to disk, then renamed over it, so a reader or a crash sees
the old file or the new one, never half of one.
"""

import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 text to `path` atomically."""
    replace_together({Path(path): text.encode("utf-8")})


def replace_together(files: dict[Path, bytes]) -> None:
    """Write several files: each is written in full beside its target before any target is replaced, so a
    full disk or a bad value leaves none of them half-made. OSError when one cannot be written."""
    staged: dict[Path, str] = {}
    try:
        for path, data in files.items():
            staged[path] = write_beside(path, data)
        for path, temporary in staged.items():
            os.replace(temporary, path)
    except OSError:
        for temporary in staged.values():
            Path(temporary).unlink(missing_ok=True)
        raise


def write_beside(path: Path, data: bytes) -> str:
    """`data` in a new temporary file in `path`'s folder, on disk, with the mode a new file would get
    (0666 less the umask; mkstemp's 0600 would hide reports from other users and web servers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(file.name, 0o666 & ~current_umask())
    return file.name


def current_umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
