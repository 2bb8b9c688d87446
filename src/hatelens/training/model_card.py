"""Model cards: the README.md that `train` writes beside an adapter and `merge` beside a merged model.

Hugging Face's conventions: YAML front matter (base_model, library_name, tags, license, datasets)
that the Hub reads, then what a person needs to use the model responsibly: how it was trained (data,
template, recipe), how it scored (validation during training; test runs with per-group FPR/FNR
when known), what it is for and not for, and the licences of the data it learned from.
"""

import json
from pathlib import Path

import yaml

from hatelens import runs
from hatelens.errors import DataError
from hatelens.report.formatting import num

# alias -> (Hub id of the base model, its licence in the Hub's spelling)
BASE_MODELS = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "gemma3-270m": ("google/gemma-3-270m-it", "gemma"),
    "gpt-oss-20b": ("openai/gpt-oss-20b", "apache-2.0"),
    "gpt-oss-120b": ("openai/gpt-oss-120b", "apache-2.0"),
}
DATA_LICENCES = (
    "- **HateXplain** (Mathew et al., AAAI 2021): CC-BY-4.0. Cite the paper.",
    "- **ToxiGen** (Hartvigsen et al., ACL 2022, Microsoft): data under the Community Data License Agreement "
    "(Permissive 2.0), code under MIT. Cite the paper.",
)
INTENDED_USE = (
    "Research on hate-speech classification and its fairness across target groups, and as one signal that "
    "helps human moderators prioritise posts. It answers `hate` or `normal` for one English post, scored from "
    "the log-probabilities of the template's answer words (the two label words, and a third word such as "
    "` offensive` where the template trains one: it counts toward the label it names).")
LIMITATIONS = (
    "- Trained and tested on English posts about three target groups (LGBTQ+, Mexican, Middle Eastern) from "
    "two datasets; other groups, languages, dialects and platforms are untested.",
    "- HateXplain's `offensive` posts count as `normal`: offensive but not hateful speech is not flagged.",
    "- Error rates differ by group (see the per-group FPR/FNR): a high FPR means posts *about* a group are "
    "wrongly flagged. Check them on your own data before relying on the model.",
    "- Not for automated sanctions against people without human review.",
    "- The training texts are offensive by nature; the model was never trained to generate text.",
)


def front_matter(base_model: str, *, merged: bool) -> dict:
    hub_id, licence = BASE_MODELS.get(base_model, (None, None))
    if hub_id is None and base_model.count("/") == 1 and not Path(base_model).exists():
        hub_id = base_model  # a hub id as given
    values = {"base_model": hub_id} if hub_id else {}
    values.update(library_name="transformers" if merged else "peft", license=licence or "other",
                  pipeline_tag="text-generation",
                  tags=["hatelens", "hate-speech-detection", "text-classification", "lora",
                        *(["merged"] if merged else ["peft"])],
                  language=["en"])
    return values


def build_model_card(*, base_model: str, template: str, prompt_sha256: str | None = None, merged: bool = False,
                     training: dict | None = None, evaluations: dict[str, dict] | None = None) -> str:
    """The README.md text. training: a training_summary.json; evaluations: label -> a metrics.json."""
    kind = "merged model (base + LoRA adapter)" if merged else "LoRA adapter"
    use = (f"hatelens evaluate --model <this folder> --template {template} --data posts.jsonl")
    lines = ["---", yaml.safe_dump(front_matter(base_model, merged=merged), sort_keys=False).strip(), "---", "",
             f"# {Path(base_model).name} hate-speech classifier ({kind})", "",
             f"A {kind} of `{base_model}`, fine-tuned with hatelens to answer `hate` or "
             "`normal` for a post. Ask it with the same prompt template it learned:", "",
             "```", use, "```", "",
             "## Prompt template", "", f"`{template}`" + (f" (sha256 {prompt_sha256})" if prompt_sha256 else ""), ""]
    lines += _training_lines(training) + _evaluation_lines(evaluations or {})
    lines += ["## Intended use", "", INTENDED_USE, "", "## Limitations", "", *LIMITATIONS, "",
              "## Data licences", "", *DATA_LICENCES, ""]
    return "\n".join(lines)


def _training_lines(training: dict | None) -> list[str]:
    if not training:
        return ["## Training", "", "No training summary was found beside this model.", ""]
    config = training.get("config", {})
    lora = config.get("lora", {})
    recipe = [("training data", f"{config.get('train_file')} ({training.get('n_train')} examples)"),
              ("validation data", config.get("val_file")),
              ("epochs (planned / done)", f"{training.get('epochs_planned')} / {training.get('epochs_done')}"),
              ("learning rate, scheduler", f"{config.get('learning_rate')}, {config.get('lr_scheduler')}"),
              ("effective batch size", training.get("effective_batch_size")),
              ("LoRA r / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}"),
              ("LoRA targets", ", ".join(lora.get("target_modules") or []) if isinstance(
                  lora.get("target_modules"), list) else lora.get("target_modules")),
              ("trainable parameters", training.get("trainable_parameters")),
              ("best checkpoint", (training.get("best") or {}).get("why")),
              ("wall time", f"{training.get('wall_s', 0) / 60:.1f} min")]
    lines = ["## Training", "", "| setting | value |", "|---|---|",
             *(f"| {name} | {value} |" for name, value in recipe), "",
             "### Validation during training", "", "| epoch | train loss | validation loss | validation F1 | "
             "validation ROC AUC |", "|---|---|---|---|---|"]
    for row in training.get("epochs", []):
        lines.append(f"| {row.get('epoch')} | " + " | ".join(
            _number(row.get(key)) for key in ("train_loss", "eval_loss", "eval_f1", "eval_roc_auc")) + " |")
    return lines + [""]


def _evaluation_lines(evaluations: dict[str, dict]) -> list[str]:
    if not evaluations:
        return ["## Evaluation", "", "No test evaluation is recorded here yet: run `hatelens evaluate` on the "
                "test split (it writes metrics.json with per-group FPR/FNR).", ""]
    lines = ["## Evaluation", ""]
    for label, metrics in evaluations.items():
        lines += [f"### {label}", "", f"{metrics.get('n')} posts. F1 {_number(metrics.get('f1'))}, precision "
                  f"{_number(metrics.get('precision'))}, recall {_number(metrics.get('recall'))}, FPR "
                  f"{_number(metrics.get('fpr'))}, FNR {_number(metrics.get('fnr'))}, ROC AUC "
                  f"{_number(metrics.get('roc_auc'))}.", "",
                  "| group | n | F1 | FPR | FNR |", "|---|---|---|---|---|"]
        for group, row in sorted((metrics.get("per_group") or {}).items()):
            lines.append(f"| {group} | {row.get('n')} | " + " | ".join(
                _number(row.get(key)) for key in ("f1", "fpr", "fnr")) + " |")
        lines.append("")
    return lines


def _number(value) -> str:
    return num(value, 4) if value is None or isinstance(value, float) else str(value)


def write_model_card(folder: str | Path, **card) -> Path:
    """Write README.md into `folder` (see build_model_card for the arguments)."""
    path = Path(folder) / "README.md"
    runs.write_atomic(path, build_model_card(**card))
    return path


def card_for_adapter(adapter_dir: str | Path, evaluation_runs: list[str | Path] = (), *,
                     base_model: str | None = None) -> dict:
    """build_model_card's arguments from what `hatelens train` left: the adapter's hatelens_training.json,
    the run's training_summary.json, and the metrics.json of evaluation runs (labelled by folder name)."""
    adapter_dir = Path(adapter_dir)
    info_path = adapter_dir / "hatelens_training.json"
    info = _read_json(info_path) if info_path.is_file() else {}
    summary_path = adapter_dir.parent / "training_summary.json"
    evaluations = {Path(run).name: _read_json(Path(run) / "metrics.json") for run in evaluation_runs}
    return {"base_model": base_model or info.get("base_model", "unknown"),
            "template": info.get("template", "baseline"), "prompt_sha256": info.get("prompt_sha256"),
            "training": _read_json(summary_path) if summary_path.is_file() else None,
            "evaluations": evaluations}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} not found; pass an evaluation run folder (it holds metrics.json)")
    return json.loads(path.read_text(encoding="utf-8"))
