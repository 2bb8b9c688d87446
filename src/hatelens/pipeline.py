"""`hatelens run`: the whole validation in one resumable folder.

    baseline on validation -> fine-tune (LoRA) -> fine-tuned on validation -> calibrate thresholds on
    validation -> baseline and fine-tuned on test -> the same test scores under the calibrated
    thresholds -> reference backends (MiniLM-L6 frozen + logistic regression; fully fine-tuned when asked)
    and functional suite -> compare -> report

Each step writes an ordinary run folder inside runs/<stamp>_run_<name>/, named by its order, and hands
the next steps a typed result (EvalResult, TrainResult, Calibration, ModelRuns, Verdict). A step whose
folder is finished is skipped when the command runs again, so an interrupted run resumes at the step it
stopped in (and evaluation steps resume inside themselves). The test split is scored only after
training and calibration are done: nothing in it influences a choice.
"""

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hatelens import resources, runs, trackers
from hatelens.backends import create_backend
from hatelens.backends.models import free_memory
from hatelens.config import EvalConfig, ModelConfig, RunConfig, TrainConfig, load_config, to_dict
from hatelens.errors import ModelError
from hatelens.evaluation.calibrate import Calibration
from hatelens.evaluation.evaluate import DONE_FILE, EvalResult, evaluate, rethreshold

if TYPE_CHECKING:  # training (torch, TRL, PEFT) is imported when the training step runs
    from hatelens.backends.recorded import ScoreRecorder
    from hatelens.training.train import TrainResult

logger = logging.getLogger(__name__)

QUICK = {"validation_samples": 60, "test_samples": 120, "suite_samples": 60, "n_bootstrap": 200,
         "train_recipe": "configs/lora/quick_test.yaml"}
VERDICT = "verdict.json"


@dataclass
class ModelRuns:
    """One model's path through the pipeline: validation -> thresholds -> test, at 0.5 and calibrated."""

    validation: EvalResult
    calibration: Calibration  # thresholds picked on `validation`
    test: EvalResult  # at the default threshold 0.5
    test_calibrated: EvalResult  # the same test scores under `calibration`


@dataclass
class Verdict:
    """What verdict.json holds: both comparisons' outcome and where to read more."""

    passed: bool  # every criterion passed at the default threshold (the headline)
    passed_calibrated: bool  # ... and under the calibrated thresholds
    criteria: list[dict] | None
    criteria_calibrated: list[dict] | None
    report_html: Path
    comparison: Path  # the comparison folder (comparison.json, cases.csv, report.md)
    wall_s: float
    quick: bool
    train_run: Path  # the training run folder (adapter/, training_summary.json)
    resumed: bool = False  # this invocation resumed an earlier one: wall_s counts this invocation only

    def to_json(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(self).items()}


@dataclass
class PipelineResult:
    run_dir: Path
    report_html: Path
    passed: bool
    verdict: Verdict


def quick_config(config: RunConfig) -> RunConfig:
    """The same pipeline on small stratified samples with the quick_test recipe (a smoke run)."""
    return replace(config, name=f"{config.name}_quick", **QUICK)


def run_pipeline(config: RunConfig, *, progress: bool = True, quick: bool = False) -> PipelineResult:
    """Walk every step; return where the report is and whether every criterion passed."""
    started = time.perf_counter()
    root, resumed = open_run_folder(config, quick)
    steps = Steps(config, root, progress, resumed=resumed)

    # Steps in the order that loads each model once: the base model scores validation and test, then makes
    # way for training; the fine-tuned model scores validation, test and the suite. (The test scores play
    # no part in training or in choosing thresholds: calibration reads validation only.)
    # Where training scores validation as the evaluator would (float32, one process), its scores before the first
    # step and at the best checkpoint are the validation steps' (backends/recorded.py): two passes fewer.
    reuse = steps.validation_from_training("02_train")
    if not reuse:
        baseline_validation = steps.evaluate("01_baseline_validation", config.validation_data,
                                             config.validation_samples)
    baseline_test = steps.evaluate("04_baseline_test", config.test_data, config.test_samples)
    steps.release_models()
    trained = steps.train("02_train")
    if reuse:
        baseline_validation = steps.evaluate("01_baseline_validation", config.validation_data,
                                             config.validation_samples, recorded=(trained, 0))
    adapter, best_step = str(trained.adapter_dir), (trained.summary.get("best") or {}).get("step")
    finetuned_validation = steps.evaluate("03_finetuned_validation", config.validation_data,
                                          config.validation_samples, adapter=adapter,
                                          recorded=(trained, best_step) if reuse else None)
    finetuned_test = steps.evaluate("05_finetuned_test", config.test_data, config.test_samples, adapter=adapter)
    suite = None
    if config.functional_suite:
        suite = steps.evaluate("09_finetuned_functional_suite",
                               str(resources.find("suites", config.functional_suite)), config.suite_samples,
                               adapter=adapter, data_format="hatecheck")
    steps.release_models()
    baseline_calibration = steps.calibrate(baseline_validation)
    finetuned_calibration = steps.calibrate(finetuned_validation)
    baseline = ModelRuns(baseline_validation, baseline_calibration, baseline_test,
                         steps.rethreshold("06_baseline_test_calibrated", baseline_test, baseline_calibration))
    finetuned = ModelRuns(finetuned_validation, finetuned_calibration, finetuned_test,
                          steps.rethreshold("07_finetuned_test_calibrated", finetuned_test, finetuned_calibration))
    suites = {}  # the suite at 0.5 and under the thresholds the run calibrated on validation (what it ships)
    if suite is not None:
        suites = {"fine-tuned, functional suite": suite.run_dir,
                  "fine-tuned, functional suite, calibrated": steps.rethreshold(
                      "09_finetuned_functional_suite_calibrated", suite, finetuned_calibration).run_dir}
    references = []  # the MiniLM references asked for, on test (each run records its kind)
    if config.reference:
        references.append(steps.evaluate("08_reference_test", config.test_data, config.test_samples,
                                         backend="reference"))
    if config.reference_finetuned:
        references.append(steps.evaluate("08_reference_finetuned_test", config.test_data, config.test_samples,
                                         backend="reference", reference_kind="finetuned"))

    verdict = steps.compare_and_report("10_comparison", baseline, finetuned, trained, references=references,
                                       suites=suites, wall_s=time.perf_counter() - started, quick=quick)
    runs.write_json(root / VERDICT, verdict.to_json())
    trackers.log(config.report_to, root, root.name, {"run/passed": float(verdict.passed),
                                                     "run/passed_calibrated": float(verdict.passed_calibrated)})
    return PipelineResult(run_dir=root, report_html=verdict.report_html, passed=verdict.passed, verdict=verdict)


def finished_training(container: Path) -> "TrainResult | None":
    """The newest finished training run in a step's folder, or None."""
    from hatelens.training.train import SUMMARY_FILE, TrainResult

    finished = sorted(container.glob(f"*/{SUMMARY_FILE}")) if container.is_dir() else []
    if not finished:
        return None
    run_dir = finished[-1].parent
    return TrainResult(run_dir=run_dir, adapter_dir=run_dir / "adapter", summary=json.loads(finished[-1].read_text()))


def open_run_folder(config: RunConfig, quick: bool) -> tuple[Path, bool]:
    """(the unfinished run of this very config, True) to resume, or (a new folder with its config and
    manifest, False)."""
    recorded = {**to_dict(config), "quick": quick}
    identity = runs.config_hash(config, quick=quick)
    root = runs.find_unfinished(Path(config.output_dir), identity, VERDICT)
    if root is not None:
        logger.info("resuming %s: finished steps are kept", root)
        return root, True
    root = runs.new_run_dir(Path(config.output_dir), f"run_{config.name}")
    runs.write_yaml(root / "config.yaml", recorded)
    runs.write_json(root / "manifest.json", runs.manifest(step="run", config_hash=identity, quick=quick))
    return root, False


class Steps:
    """The pipeline's steps, each writing (or finding) its own folder under the pipeline's root."""

    def __init__(self, config: RunConfig, root: Path, progress: bool, resumed: bool = False):
        self.config, self.root, self.progress, self.resumed = config, root, progress, resumed
        self.loaded: dict[str | None, object] = {}  # adapter (None: the base model) -> its loaded classifier
        self.recorder: "ScoreRecorder | None" = None  # the training's validation scores, when this process trains

    def classifier(self, model: ModelConfig, step: str):
        """The hf classifier of this model + adapter, loaded once and reused by every step that scores with
        it (a 40 GB model loads in tens of seconds); None for other backends and for finished steps."""
        if model.backend != "hf" or (self.root / step / DONE_FILE).is_file():
            return None
        if model.adapter not in self.loaded:
            self.release_models()
            self.loaded[model.adapter] = create_backend("hf", model)
        return self.loaded[model.adapter]

    def release_models(self) -> None:
        """Drop the loaded classifiers (before training, or another model, needs the memory)."""
        if self.loaded:
            self.loaded.clear()
            free_memory()

    def evaluate(self, step: str, data: str, samples: int | None, *, adapter: str | None = None,
                 backend: str = "hf", reference_kind: str = "logistic", data_format: str | None = None,
                 recorded: tuple["TrainResult", int] | None = None) -> EvalResult:
        """One evaluation step. recorded: (training, step): answer from the scores that training's evaluation at
        that step computed, where the recorder saw it (else the model scores as usual)."""
        config = self.config
        model = ModelConfig(model=config.model, adapter=adapter, template=config.template, backend=backend,
                            batch_size=config.batch_size, max_batch_tokens=config.max_batch_tokens,
                            placement=config.placement, reference_train=config.train_data,
                            reference_kind=reference_kind)
        eval_config = EvalConfig(data=data, output_dir=str(self.root), name=step, format=data_format,
                                 max_samples=samples, seed=config.seed, n_bootstrap=config.n_bootstrap, model=model,
                                 report_to=config.report_to)
        logger.info("step %s: %s on %s", step, f"reference ({reference_kind})" if backend == "reference" else
                    f"{config.model}{' + adapter' if adapter else ''}", data)
        calls = None
        if recorded and self.recorder and not (self.root / step / DONE_FILE).is_file():
            calls = self.recorder.at_step(recorded[0].summary, recorded[1])
        if calls is None:
            return evaluate(eval_config, classifier=self.classifier(model, step), progress=self.progress,
                            run_dir=self.root / step)
        from hatelens.backends.recorded import RecordedClassifier, model_version

        classifier = RecordedClassifier(calls, model_version=model_version(model),
                                        scores_from=f"{recorded[0].run_dir}: its evaluation at step {recorded[1]}",
                                        fallback=lambda: self.classifier(model, step))
        return evaluate(eval_config, classifier=classifier, progress=self.progress, run_dir=self.root / step)

    def validation_from_training(self, step: str) -> bool:
        """Whether the training in `step` will score validation as the evaluator would, before its first step and
        at each checkpoint: one process, float32 weights in training and in evaluation, evaluation before training
        on, training not finished yet (a finished one recorded nothing). The validation steps then wait for it."""
        import torch

        from hatelens.backends.models import pick_device, pick_dtype

        if self.config.train_processes > 1 or finished_training(self.root / step):
            return False
        train_config = self.train_config(step)
        trains_fp32 = pick_dtype(train_config.dtype, pick_device(train_config.device)) == torch.float32
        evaluates_fp32 = pick_dtype("auto", pick_device("auto")) == torch.float32  # the steps' ModelConfig
        return train_config.eval_on_start and trains_fp32 and evaluates_fp32

    def train_values(self, step: str) -> dict:
        """What the run sets in the training recipe: its model, template, data and folder."""
        config = self.config
        return {"model": config.model, "template": config.template, "train_file": config.train_data,
                "val_file": config.validation_data, "output_dir": str(self.root / step), "name": "train",
                # TensorBoard in the run folder as always, plus the run's trackers
                "report_to": list(dict.fromkeys(["tensorboard", *trackers.parse_report_to(config.report_to)]))}

    def train_config(self, step: str) -> TrainConfig:
        """The training recipe <- this run's model, template, data and folder <- the run's train_overrides."""
        return load_config(TrainConfig, self.config.train_recipe, self.config.train_overrides,
                           base=self.train_values(step))

    def train(self, step: str) -> "TrainResult":
        """Fine-tune into <root>/<step>/; a finished training there is reused, an unfinished one resumed.
        With train_processes > 1 the training runs under `accelerate launch` (training/launch.py)."""
        from hatelens.backends.recorded import ScoreRecorder
        from hatelens.training.train import train

        finished = finished_training(self.root / step)
        if finished:
            return finished
        train_config = self.train_config(step)  # a bad recipe or override fails here, before any process starts
        logger.info("step %s: LoRA fine-tuning with %s", step, self.config.train_recipe)
        if self.config.train_processes < 2:
            self.recorder = ScoreRecorder()  # the evaluator's scoring, each call's scores kept (backends/recorded.py)
            return train(train_config, score_texts=self.recorder, progress=self.progress, resume=True)
        from hatelens.training.launch import as_overrides, launch_command, launch_training

        command = launch_command(self.config.train_recipe,
                                 [*as_overrides(self.train_values(step)), *self.config.train_overrides],
                                 processes=self.config.train_processes, progress=self.progress,
                                 accelerate_config=resources.find("accelerate", self.config.train_accelerate_config))
        launch_training(command, self.root / step)
        finished = finished_training(self.root / step)
        if finished is None:
            raise ModelError(f"training under accelerate launch ended without {self.root / step}/*/training_summary"
                             ".json; run the same `hatelens run` again to resume it")
        return finished

    def calibrate(self, validation: EvalResult) -> Calibration:
        from hatelens.evaluation.calibrate import calibrate

        return calibrate(validation.run_dir, objective=self.config.calibration,
                         max_group_fpr=self.config.max_group_fpr, max_group_fnr=self.config.max_group_fnr)

    def rethreshold(self, step: str, test: EvalResult, calibration: Calibration) -> EvalResult:
        return rethreshold(test.run_dir, calibration.path, self.root / step)

    def compare_and_report(self, step: str, baseline: ModelRuns, finetuned: ModelRuns, trained: "TrainResult", *,
                           references: list[EvalResult], suites: dict[str, Path], wall_s: float,
                           quick: bool) -> Verdict:
        from hatelens.evaluation.compare import compare
        from hatelens.evaluation.criteria import load_criteria
        from hatelens.report.writer import write_report

        output = self.root / step
        criteria = load_criteria(self.config.criteria)
        shared = {"criteria": criteria, "training_summary": trained.summary, "n_bootstrap": self.config.n_bootstrap,
                  "seed": self.config.seed}
        result = compare(baseline.test.run_dir, finetuned.test.run_dir, output_dir=output, **shared)
        calibrated = compare(baseline.test_calibrated.run_dir, finetuned.test_calibrated.run_dir,
                             output_dir=output / "calibrated", **shared)
        extra_runs = {"baseline, calibrated": baseline.test_calibrated.run_dir,
                      "fine-tuned, calibrated": finetuned.test_calibrated.run_dir, **suites}
        _, html_path = write_report(output, result.comparison, baseline.test.run_dir, finetuned.test.run_dir,
                                    trained.summary, reference_runs=[run.run_dir for run in references],
                                    extra_runs=extra_runs, notes=self.notes(wall_s, calibrated.passed, output, quick),
                                    calibrations=[baseline.calibration.details, finetuned.calibration.details])
        return Verdict(passed=result.passed, passed_calibrated=calibrated.passed,
                       criteria=result.comparison.get("criteria"),
                       criteria_calibrated=calibrated.comparison.get("criteria"), report_html=html_path,
                       comparison=output, wall_s=round(wall_s, 1), quick=quick, train_run=trained.run_dir,
                       resumed=self.resumed)

    def notes(self, wall_s: float, passed_calibrated: bool, output: Path, quick: bool) -> list[str]:
        """The paragraphs under the report's verdict: wall time, the calibrated verdict, a quick run's warning."""
        machine = runs.machine()
        span = ("this invocation, which resumed an earlier one (the steps it found finished are not counted)"
                if self.resumed else "the whole run")
        notes = [f"Wall time of {span}: {wall_s / 60:.1f} minutes on this machine "
                 f"({machine['cpu_count']} CPU cores{', GPU ' + machine['gpu'] if 'gpu' in machine else ''}).",
                 "Headline comparison: both models at the default threshold 0.5. With thresholds calibrated on "
                 f"validation ({self.config.calibration}), the verdict is "
                 f"{'PASS' if passed_calibrated else 'FAIL'}: see {output / 'calibrated' / 'summary.txt'}."]
        if quick:
            notes.insert(0, "QUICK RUN: small stratified samples and the quick_test recipe; the figures "
                            "show the pipeline works, not how good the model is.")
        return notes
