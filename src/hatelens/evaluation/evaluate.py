"""Evaluate a classifier on a dataset into a run folder; resumable after any interruption.

predictions.jsonl grows one batch at a time (each batch one write, flushed to disk), so a run killed
at any moment loses at most the batch in flight. Running the same command again finds the unfinished
folder by its config hash, skips the examples already there, and ends with the same numbers:
batches are planned from the whole dataset up front, so their composition (and padding) is the same
whether or not the run was interrupted. Batches run shortest texts first (less padding); once every
row is written, predictions.jsonl is replaced (atomically) by the same rows in data order, so a
finished run folder is always in data order.
"""

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from hatelens import data, runs, trackers
from hatelens.backends import adapters, create_backend, prompts
from hatelens.config import DEFAULT_THRESHOLD, EvalConfig, ModelConfig, from_dict, to_dict
from hatelens.data import suites
from hatelens.data.formats import iter_jsonl_lines, loads_line
from hatelens.errors import ConfigError, DataError
from hatelens.evaluation import metrics
from hatelens.evaluation.summary import format_summary
from hatelens.evaluation.thresholds import Thresholds, load_thresholds
from hatelens.files import file_sha256
from hatelens.process_team import broadcast, process_team

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
DONE_FILE = "metrics.json"
CHUNK_BATCHES = 4  # batches per write: the most work an interruption can lose
SHARD_NAME = "predictions.rank{rank}.jsonl"  # one per process of a multi-process run, merged at its end


@dataclass
class EvalResult:
    run_dir: Path
    metrics: dict
    summary: str
    resumed_rows: int  # rows found from an earlier, interrupted attempt
    main_process: bool = True  # False in the other processes of a multi-process run (they print nothing)


def load_eval_examples(config: EvalConfig) -> tuple[list, list[str]]:
    loaded = data.load_examples(config.data, text_column=config.text_column, label_column=config.label_column,
                                group_column=config.group_column, format=config.format,
                                skip_empty_texts=config.skip_empty_texts)
    examples = loaded.examples
    if config.max_samples:
        examples = data.stratified_sample(examples, config.max_samples, seed=config.seed)
    return examples, loaded.warnings


def check_no_leakage(examples, template: prompts.PromptTemplate) -> None:
    """Few-shot examples shown in the prompt must not be among the rows we score."""
    shown = {shot.text.strip().lower() for shot in template.few_shot}
    leaked = [example.id for example in examples if example.text.strip().lower() in shown]
    if leaked:
        raise DataError(f"template {template.name} shows {len(leaked)} evaluated example(s) as few-shot "
                        f"examples ({', '.join(leaked[:3])}); evaluate on data that excludes them")


def read_predictions(path: Path) -> dict[str, dict]:
    """Rows already written, by id. A trailing half-written line (a kill mid-write) is cut off."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        with open(path, "r+b") as file:
            file.truncate(len(complete))
    rows = {}
    for number, line in iter_jsonl_lines(complete.decode("utf-8")):  # "\n" only: a text may hold U+2028
        row = loads_line(line, f"{path}:{number}")
        rows[row["id"]] = row
    return rows


def plan_chunks(examples, chunk_size: int) -> list[list]:
    """Examples sorted by length (less padding), cut into fixed chunks: same plan on every attempt."""
    ordered = sorted(examples, key=lambda example: (len(example.text), example.id))
    return [ordered[start:start + chunk_size] for start in range(0, len(ordered), chunk_size)]


def evaluate(config: EvalConfig, *, classifier=None, progress: bool = True, run_dir: Path | None = None) -> EvalResult:
    """Score every example, write the run folder, return its metrics and summary.

    run_dir: a fixed folder (the pipeline's steps) instead of a new timestamped one; a finished folder
    is returned as it is, an unfinished one resumed.
    """
    trackers.parse_report_to(config.report_to)  # a typo fails now, not after the scoring
    model_config, template_source = adapters.resolve(config.model)  # an adapter's base and template by default
    config = dataclasses.replace(config, model=model_config)
    runs.check_output_dir(Path(config.output_dir))  # a file in the way fails now, not after the model loads
    examples, warnings = load_eval_examples(config)
    template = prompts.load_template(config.model.template) if config.model.backend != "reference" else None
    if template:
        check_no_leakage(examples, template)
    thresholds = load_thresholds(config.thresholds, config.threshold)
    identity = runs.config_hash(config, examples=data.examples_hash(examples))
    if run_dir is not None and (Path(run_dir) / DONE_FILE).is_file():
        return load_result(Path(run_dir))
    team = process_team(config.model.device)  # None unless launched as several processes (accelerate, torchrun)
    run_dir = _unfinished_run_dir(config, identity, run_dir, team)
    classifier = classifier or create_backend(config.model.backend, config.model)
    run_dir, done = _shared_run_dir(config, run_dir, team)
    if _is_main(team):
        _write_config_and_manifest(run_dir, config, identity, classifier, examples, template, thresholds, warnings,
                                   template_source)
    started = time.perf_counter()
    write_s = _score_missing(classifier, examples, done, thresholds, run_dir / PREDICTIONS, config, progress, team)
    if not _gather_predictions(run_dir, examples, team):  # another process of a team: the main one finishes
        return dataclasses.replace(load_result(run_dir), resumed_rows=len(done), main_process=False)
    rows = list(read_predictions(run_dir / PREDICTIONS).values())  # in data order
    run_info = {"model_version": classifier.model_version, "mode": classifier.mode,
                "template": template.name if template else None, "data": str(config.data),
                "max_samples": config.max_samples, "thresholds": thresholds.to_dict(),
                "scoring_wall_s": round(time.perf_counter() - started, 2), "write_s": round(write_s, 3),
                "resumed_rows": len(done),
                "timing": getattr(classifier, "timing", None)}  # hf: model load, compilation, first batch apart
    if getattr(classifier, "scores_from", None):  # scores a training run computed (backends/recorded.py)
        run_info["scores_from"] = classifier.scores_from
    if team is not None:
        run_info["processes"] = team.num_processes
    result = finish_run(run_dir, rows, run_info, config)
    if team is not None:
        team.wait_for_everyone()  # the others read metrics.json once it is written
    return result


def _write_config_and_manifest(run_dir: Path, config: EvalConfig, identity: str, classifier, examples, template,
                               thresholds: Thresholds, warnings: list[str], template_source: str) -> None:
    """config.yaml (what ran) and manifest.json (what it ran on), before the first prediction."""
    runs.write_yaml(run_dir / "config.yaml", to_dict(config))
    runs.write_json(run_dir / "manifest.json", runs.manifest(
        step="evaluate", config_hash=identity, model_version=classifier.model_version,
        mode=classifier.mode, data_file=str(config.data), data_sha256=file_sha256(config.data),
        examples_sha256=data.examples_hash(examples), n_examples=len(examples),
        prompt_template=template.name if template else None, prompt_sha256=template.hash if template else None,
        prompt_template_file=config.model.template if template else None,
        prompt_template_source=template_source if template else None,
        thresholds=thresholds.to_dict(), data_warnings=warnings,
    ))


def finish_run(run_dir: Path, rows: list[dict], run_info: dict, config: EvalConfig) -> EvalResult:
    """metrics.json + summary.txt from prediction rows (in data order); metrics.json is written last."""
    result = metrics.compute_metrics(
        [row["label"] for row in rows], [row["prediction"] for row in rows],
        [row["score"] for row in rows], [row["group"] for row in rows],
        n_bootstrap=config.n_bootstrap, seed=config.seed,
    )
    result["run"] = run_info
    result["truncated"] = count_truncated(rows)
    summary = format_summary(result, target_f1=config.target_f1)
    functionality = suites.per_functionality(rows)  # functional suites (HateCheck files) only
    if functionality:
        result["per_functionality"] = functionality
        summary += "\n" + suites.format_functionality(functionality)
    runs.write_atomic(run_dir / "summary.txt", summary)
    runs.write_json(run_dir / DONE_FILE, result)  # written last: its presence marks the run finished
    trackers.log(config.report_to, run_dir, run_dir.name, trackers.evaluation_figures(result),
                 params={"data": config.data, "model": config.model.model, "adapter": config.model.adapter,
                         "template": config.model.template, "n": result["n"]})
    return EvalResult(run_dir=run_dir, metrics=result, summary=summary, resumed_rows=run_info.get("resumed_rows", 0))


def count_truncated(rows: list[dict]) -> dict:
    """Rows whose post was cut to fit max_length_tokens: {"overall": n, "per_group": {group: n}}."""
    per_group = {group: 0 for group in sorted({row["group"] for row in rows}, key=str)}
    for row in rows:
        per_group[row["group"]] += bool(row.get("truncated"))
    return {"overall": sum(per_group.values()), "per_group": per_group}


def load_result(run_dir: Path) -> EvalResult:
    """A finished run folder as an EvalResult."""
    run_dir = Path(run_dir)
    return EvalResult(run_dir=run_dir, metrics=json.loads((run_dir / DONE_FILE).read_text()),
                      summary=(run_dir / "summary.txt").read_text(), resumed_rows=0)


def rethreshold(source_run: Path, thresholds_path: str, run_dir: Path) -> EvalResult:
    """The same scores under other decision thresholds, as a run folder of its own (no re-scoring).

    Only score-mode runs qualify: a generate-mode answer has no score to threshold.
    """
    source_run, run_dir = Path(source_run), Path(run_dir)
    if (run_dir / DONE_FILE).is_file():
        return load_result(run_dir)
    config = from_dict(EvalConfig, yaml.safe_load((source_run / "config.yaml").read_text()),
                       where=str(source_run / "config.yaml"))
    config.thresholds = str(thresholds_path)
    thresholds = load_thresholds(config.thresholds, config.threshold)
    source_rows = list(read_predictions(source_run / PREDICTIONS).values())  # in data order
    if any(row["score"] is None for row in source_rows):
        raise ConfigError(f"{source_run} has rows without a score (generate mode): evaluate again with --thresholds")
    labels = thresholds.decide([row["score"] for row in source_rows], [row["group"] for row in source_rows])
    rows = [{**row, "prediction": label, "threshold": thresholds.for_group(row["group"])}
            for row, label in zip(source_rows, labels)]
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_yaml(run_dir / "config.yaml", to_dict(config))
    source_manifest = json.loads((source_run / "manifest.json").read_text())
    runs.write_json(run_dir / "manifest.json", {**source_manifest, **runs.manifest(
        step="rethreshold", source_run=str(source_run), thresholds=thresholds.to_dict())})
    runs.write_atomic(run_dir / PREDICTIONS, _jsonl(rows))
    source_info = json.loads((source_run / DONE_FILE).read_text())["run"]
    return finish_run(run_dir, rows, {**source_info, "thresholds": thresholds.to_dict(),
                                      "rethresholded_from": str(source_run)}, config)


def reference_config(config: EvalConfig, train_file: str, kind: str = "logistic") -> EvalConfig:
    """The reference classifier of `kind` (MiniLM + logistic regression, or MiniLM fully fine-tuned; trained on
    `train_file`) on the same rows as `config`: same data, sample, seed and output folder; threshold 0.5, since
    thresholds calibrated on another model's scores mean nothing for its scores."""
    model = ModelConfig(backend="reference", reference_train=train_file, reference_kind=kind,
                        device=config.model.device)
    return dataclasses.replace(config, name=None, threshold=DEFAULT_THRESHOLD, thresholds=None, model=model)


def default_name(config: EvalConfig) -> str:
    if config.model.backend == "reference":
        return "reference" if config.model.reference_kind == "logistic" else f"reference_{config.model.reference_kind}"
    model = Path(config.model.adapter or config.model.model).name or "model"
    return f"{model}_{Path(config.model.template).stem}"


def _score_missing(classifier, examples, done, thresholds: Thresholds, path: Path, config: EvalConfig,
                   progress: bool, team=None):
    """Score the examples not in `done`, chunk by chunk, appending each chunk's rows to `path` (flushed to
    the disk: a crash loses one chunk at most). Returns the seconds spent writing."""
    from tqdm import tqdm

    chunks = plan_chunks(examples, config.model.batch_size * CHUNK_BATCHES)
    if team is not None:  # every n-th chunk, each process into its own file (merged by the main process)
        chunks = chunks[team.process_index::team.num_processes]
        path = path.with_name(SHARD_NAME.format(rank=team.process_index))
        progress = progress and team.is_main_process
    share = [example for chunk in chunks for example in chunk]
    bar = tqdm(total=len(share), initial=sum(example.id in done for example in share), unit="sample",
               disable=not progress, dynamic_ncols=True, desc="scoring")
    write_s = 0.0
    with open(path, "a", encoding="utf-8") as file:
        for chunk in chunks:
            if all(example.id in done for example in chunk):
                continue
            outputs = classifier.classify([example.text for example in chunk], [example.group for example in chunk])
            began = time.perf_counter()
            file.write(_jsonl(_row(example, output, thresholds) for example, output in zip(chunk, outputs)))
            file.flush()
            os.fsync(file.fileno())
            write_s += time.perf_counter() - began
            bar.update(sum(example.id not in done for example in chunk))
    bar.close()
    return write_s


def _row(example, output, thresholds: Thresholds) -> dict:
    """One line of predictions.jsonl. A score is thresholded; a generate-mode answer is the prediction."""
    scored = output.score is not None
    label = thresholds.decide([output.score], [example.group])[0]
    row = {"id": example.id, "group": example.group, "label": example.label, "score": output.score,
           "prediction": label if scored else output.answer,
           "threshold": thresholds.for_group(example.group) if scored else None,
           "text": example.text, "source": example.source}
    if output.raw is not None:
        row["raw"] = output.raw
    if output.truncated:
        row["truncated"] = True  # the post was cut to fit max_length_tokens
    if example.extra:
        row["extra"] = example.extra
    return row


def _jsonl(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# -- the run folder: resume, several processes, data order ----------------------------------------
def _is_main(team) -> bool:
    return team is None or team.is_main_process


def _unfinished_run_dir(config: EvalConfig, identity: str, run_dir: Path | None, team) -> Path | None:
    """The folder to resume (given, or the newest unfinished one of this config), rows of an interrupted
    multi-process attempt merged in; None when starting afresh."""
    run_dir = Path(run_dir) if run_dir else runs.find_unfinished(Path(config.output_dir), identity, DONE_FILE)
    if run_dir and _is_main(team):
        _merge_shards(run_dir)
    return run_dir


def _shared_run_dir(config: EvalConfig, run_dir: Path | None, team) -> tuple[Path, dict[str, dict]]:
    """(the run folder, rows already in it): created by the main process, shared with a team's others."""
    if run_dir is None and _is_main(team):
        run_dir = runs.new_run_dir(Path(config.output_dir), config.name or default_name(config))
    if team is not None:  # every process takes the main process's folder
        run_dir = Path(broadcast(team, str(run_dir)))
    done = read_predictions(run_dir / PREDICTIONS)
    if team is not None:
        team.wait_for_everyone()
    run_dir.mkdir(parents=True, exist_ok=True)
    if done:
        logger.info("resuming %s: %d predictions already written", run_dir, len(done))
    return run_dir, done


def _gather_predictions(run_dir: Path, examples, team) -> bool:
    """Rewrite predictions.jsonl in data order (merging a team's shards); False in a team's other processes,
    which wait until the main process has finished the run."""
    if team is not None:
        team.wait_for_everyone()
        if not team.is_main_process:
            team.wait_for_everyone()
            return False
    _merge_shards(run_dir, examples)
    return True


def _merge_shards(run_dir: Path, examples=None) -> None:
    """Move the rows of the per-process files into predictions.jsonl: in data order when `examples`
    are given (the end of a run), else appended (resuming an interrupted multi-process one).

    predictions.jsonl is replaced atomically (rename), and every row is in it before and after, so a
    crash at any moment leaves a file a resumed run reads completely."""
    shards = sorted(run_dir.glob(SHARD_NAME.format(rank="*")))
    if not shards and examples is None:
        return
    rows = read_predictions(run_dir / PREDICTIONS)
    for shard in shards:
        rows.update(read_predictions(shard))
    if examples is not None:
        rows = {example.id: rows[example.id] for example in examples if example.id in rows}
    runs.write_atomic(run_dir / PREDICTIONS, _jsonl(rows.values()))
    for shard in shards:
        shard.unlink()
