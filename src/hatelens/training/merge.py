"""Fold a LoRA adapter into its base model: one safetensors model + tokenizer, no PEFT needed to serve it.

    hatelens merge --adapter runs/<train run>/adapter --output models/hatelens-merged

The merged folder scores like base + adapter (tests/test_merge.py checks it on a tiny model) and
loads with `--model <folder>` anywhere a model folder is accepted.
"""

import logging
import shutil
from pathlib import Path

from hatelens import runs
from hatelens.backends import models
from hatelens.errors import ConfigError
from hatelens.training.model_card import card_for_adapter, write_model_card

logger = logging.getLogger(__name__)

MERGE_INFO = "hatelens_merge.json"


def merge_adapter(adapter_dir: str, output_dir: str, *, model: str | None = None, dtype: str = "auto",
                  device: str = "cpu", evaluation_runs: list[str] = ()) -> Path:
    """Write base + adapter, merged, to output_dir (written beside it first, then renamed into place), with a
    model card (README.md) carrying the training summary and the metrics of `evaluation_runs`."""
    from peft import PeftModel

    output = Path(output_dir)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"--output {output} exists and is not empty; choose a new folder")
    base = model or models.adapter_base(adapter_dir)
    source = models.resolve_model(base)
    tokenizer = models.load_tokenizer(source)
    device = models.pick_device(device)
    base_model = models.load_model(source, dtype=models.pick_dtype(dtype, device), device=device, tokenizer=tokenizer)
    merged = PeftModel.from_pretrained(base_model, adapter_dir).merge_and_unload()
    merged.name_or_path = str(output)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    runs.write_json(staging / MERGE_INFO, {"base_model": base, "adapter": str(adapter_dir),
                                            "adapter_sha256": models.adapter_hash(adapter_dir)})
    write_model_card(staging, merged=True, **card_for_adapter(adapter_dir, evaluation_runs, base_model=base))
    if output.exists():
        output.rmdir()
    staging.replace(output)
    logger.info("merged %s + %s into %s", base, adapter_dir, output)
    return output
