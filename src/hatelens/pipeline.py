"""`hatelens run`: the whole validation in one resumable folder.

    baseline on validation -> fine-tune (LoRA) -> fine-tuned on validation -> calibrate thresholds on
    validation -> baseline and fine-tuned on test -> the same test scores under the calibrated
    thresholds -> reference backend and functional suite -> compare -> report

Each step writes an ordinary run folder inside runs/<stamp>_run_<name>/, named by its order. A step
whose folder is finished is skipped when the command runs again, so an interrupted run resumes at the
step it stopped in (and evaluation steps resume inside themselves). The test split is scored only
after training and calibration are done: nothing in it influences a choice.
"""

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hatelens import runs
from hatelens.config import EvalConfig, ModelConfig, RunConfig, to_dict
from hatelens.evaluation.evaluate import EvalResult, evaluate, rethreshold

logger = logging.getLogger(__name__)

QUICK = {"validation_samples": 60, "test_samples": 120, "suite_samples": 60, "n_bootstrap": 200,
         "train_recipe": "configs/lora/quick_test.yaml"}
VERDICT = "verdict.json"


@dataclass
class PipelineResult:
    run_dir: Path
    report_html: Path
    passed: bool
    verdict: dict


def quick_config(config: RunConfig) -> RunConfig:
    """The same pipeline on small stratified samples with the quick_test recipe (a smoke run)."""
    return replace(config, name=f"{config.name}_quick", **QUICK)


def run_pipeline(config: RunConfig, *, progress: bool = True, quick: bool = False) -> PipelineResult:
    """Walk every step; return where the report is and whether every criterion passed."""
    started = time.perf_counter()
    identity = runs.config_hash(config, quick=quick)
    root = runs.find_unfinished(Path(config.output_dir), identity, VERDICT)
    if root is None:
        root = runs.new_run_dir(Path(config.output_dir), f"run_{config.name}")
        runs.write_yaml(root / "config.yaml", {**to_dict(config), "quick": quick})
        runs.write_json(root / "manifest.json", runs.manifest(step="run", config_hash=identity, quick=quick))
    else:
        logger.info("resuming %s: finished steps are kept", root)
    steps = Steps(config, root, progress)

    baseline_validation = steps.evaluate("01_baseline_validation", config.validation_data, config.validation_samples)
    train_result = steps.train("02_train")
    adapter = str(train_result.adapter_dir)
    finetuned_validation = steps.evaluate("03_finetuned_validation", config.validation_data,
                                          config.validation_samples, adapter=adapter)
    thresholds = {label: steps.calibrate(run.run_dir) for label, run in
                  (("baseline", baseline_validation), ("finetuned", finetuned_validation))}
    baseline_test = steps.evaluate("04_baseline_test", config.test_data, config.test_samples)
    finetuned_test = steps.evaluate("05_finetuned_test", config.test_data, config.test_samples, adapter=adapter)
    baseline_calibrated = rethreshold(baseline_test.run_dir, thresholds["baseline"].path,
                                      root / "06_baseline_test_calibrated")
    finetuned_calibrated = rethreshold(finetuned_test.run_dir, thresholds["finetuned"].path,
                                       root / "07_finetuned_test_calibrated")
    extra_runs = {"baseline, calibrated": baseline_calibrated.run_dir,
                  "fine-tuned, calibrated": finetuned_calibrated.run_dir}
    reference = None
    if config.reference:
        reference = steps.evaluate("08_reference_test", config.test_data, config.test_samples,
                                   backend="reference").run_dir
    if config.functional_suite:
        extra_runs["fine-tuned, functional suite"] = steps.evaluate(
            "09_finetuned_functional_suite", config.functional_suite, config.suite_samples, adapter=adapter,
            data_format="hatecheck",
        ).run_dir

    verdict = steps.compare_and_report("10_comparison", baseline_test, finetuned_test, train_result, reference,
                                       extra_runs, [thresholds["baseline"].details,
                                                    thresholds["finetuned"].details],
                                       calibrated=(baseline_calibrated, finetuned_calibrated),
                                       wall_s=time.perf_counter() - started, quick=quick)
    runs.write_json(root / VERDICT, verdict)
    return PipelineResult(run_dir=root, report_html=Path(verdict["report_html"]), passed=verdict["passed"],
                          verdict=verdict)


class Steps:
    """The pipeline's steps, each writing (or finding) its own folder under the pipeline's root."""

    def __init__(self, config: RunConfig, root: Path, progress: bool):
        self.config, self.root, self.progress = config, root, progress

    def evaluate(self, step: str, data: str, samples: int | None, *, adapter: str | None = None,
                 backend: str = "hf", data_format: str | None = None) -> EvalResult:
        config = self.config
        model = ModelConfig(model=config.model, adapter=adapter, template=config.template, backend=backend,
                            batch_size=config.batch_size, reference_train=config.train_data)
        eval_config = EvalConfig(data=data, output_dir=str(self.root), name=step, format=data_format,
                                 max_samples=samples, seed=config.seed, n_bootstrap=config.n_bootstrap, model=model)
        logger.info("step %s: %s on %s", step, "reference" if backend == "reference" else
                    f"{config.model}{' + adapter' if adapter else ''}", data)
        return evaluate(eval_config, progress=self.progress, run_dir=self.root / step)

    def train(self, step: str):
        """Fine-tune into <root>/<step>/; a finished training there is reused, an unfinished one resumed."""
        from hatelens.config import TrainConfig, load_config
        from hatelens.training.train import SUMMARY_FILE, TrainResult, train

        container = self.root / step
        finished = sorted(container.glob(f"*/{SUMMARY_FILE}")) if container.is_dir() else []
        if finished:
            run_dir = finished[-1].parent
            return TrainResult(run_dir=run_dir, adapter_dir=run_dir / "adapter",
                               summary=json.loads(finished[-1].read_text()))
        config = self.config
        overrides = [f"model={config.model}", f"template={config.template}", f"train_file={config.train_data}",
                     f"val_file={config.validation_data}", f"output_dir={container}", "name=train",
                     *config.train_overrides]
        train_config = load_config(TrainConfig, config.train_recipe, overrides)
        logger.info("step %s: LoRA fine-tuning with %s", step, config.train_recipe)
        return train(train_config, progress=self.progress, resume=True)

    def calibrate(self, validation_run: Path):
        from hatelens.evaluation.calibrate import calibrate

        objective = self.config.calibration
        return calibrate(validation_run, objective=objective, max_group_fpr=self.config.max_group_fpr)

    def compare_and_report(self, step, baseline_test, finetuned_test, train_result, reference, extra_runs,
                           calibrations, *, calibrated, wall_s: float, quick: bool) -> dict:
        from hatelens.evaluation.compare import compare
        from hatelens.evaluation.criteria import load_criteria
        from hatelens.report import write_report

        output = self.root / step
        criteria = load_criteria(self.config.criteria)
        result = compare(baseline_test.run_dir, finetuned_test.run_dir, criteria=criteria,
                         training_summary=train_result.summary, output_dir=output,
                         n_bootstrap=self.config.n_bootstrap, seed=self.config.seed)
        calibrated_result = compare(calibrated[0].run_dir, calibrated[1].run_dir, criteria=criteria,
                                    training_summary=train_result.summary, output_dir=output / "calibrated",
                                    n_bootstrap=self.config.n_bootstrap, seed=self.config.seed)
        notes = [f"Wall time of the whole run: {wall_s / 60:.1f} minutes on this machine "
                 f"({runs.machine()['cpu_count']} CPU cores{', GPU ' + runs.machine()['gpu'] if 'gpu' in runs.machine() else ''}).",
                 "Headline comparison: both models at the default threshold 0.5. With thresholds calibrated on "
                 f"validation ({self.config.calibration}), the verdict is "
                 f"{'PASS' if calibrated_result.passed else 'FAIL'}: see {output / 'calibrated' / 'summary.txt'}."]
        if quick:
            notes.insert(0, "QUICK RUN: small stratified samples and the quick_test recipe; the figures "
                            "show the pipeline works, not how good the model is.")
        _, html_path = write_report(output, result.comparison, baseline_test.run_dir, finetuned_test.run_dir,
                                    train_result.summary, reference_run=reference, extra_runs=extra_runs,
                                    calibrations=calibrations, notes=notes)
        return {"passed": result.passed, "passed_calibrated": calibrated_result.passed,
                "criteria": result.comparison.get("criteria"),
                "criteria_calibrated": calibrated_result.comparison.get("criteria"),
                "report_html": str(html_path), "comparison": str(output), "wall_s": round(wall_s, 1),
                "quick": quick, "train_run": str(train_result.run_dir)}
