"""Every file in tests/bad_inputs/ through the real `hatelens` command: exit code 2, one `error:` line
naming the file, no traceback, nothing written.

The cases run in one child process (`python -m hatelens` once per case through runpy, each in its own
empty working folder), so the hundred commands cost one interpreter start-up.
"""

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hatelens.serving.prediction_log import Prediction, PredictionLog

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
SRC = Path(__file__).resolve().parents[1] / "src"
GOOD = CORPUS / "good"
LOG = "LOG"  # stands for a real prediction log made by the fixture
NO_MODEL = "/nonexistent/model"  # evaluate must fail on its inputs before it looks for the model

# Each runs python -m hatelens in a fresh folder, with sys.argv and stdout / stderr of its own.
DRIVER = r"""
import contextlib, io, json, logging, os, runpy, sys, traceback
results = []
for case in json.load(open(sys.argv[1])):
    os.chdir(case["cwd"])
    logging.root.handlers.clear()  # the CLI configures logging once per process: once per case here
    sys.argv = ["hatelens", *case["args"]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("hatelens", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            traceback.print_exc(file=err)
            code = "exception"
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def data_stats(file: Path) -> list[str]:
    return ["data", "stats", str(file)]


def evaluate_data(file: Path) -> list[str]:
    return ["evaluate", "--model", NO_MODEL, "--data", str(file), "--output-dir", "runs", "--quiet"]


def build_hatexplain(file: Path) -> list[str]:
    return ["data", "build", "--hatexplain", str(file), "--toxigen", str(GOOD / "toxigen.csv"), "--output-dir", "out"]


def build_toxigen(file: Path) -> list[str]:
    return ["data", "build", "--hatexplain", str(GOOD / "hatexplain.json"), "--toxigen", str(file), "--output-dir",
            "out"]


def monitor_reference(file: Path) -> list[str]:
    return ["monitor", "--db", LOG, "--reference", str(file), "--output", "report.md"]


def monitor_log(file: Path) -> list[str]:
    return ["monitor", "--db", str(file), "--output", "report.md"]


def evaluate_thresholds(file: Path) -> list[str]:
    return ["evaluate", "--model", NO_MODEL, "--data", str(GOOD / "data.jsonl"), "--thresholds", str(file),
            "--output-dir", "runs", "--quiet"]


COMMANDS = {"data": data_stats, "hatexplain": build_hatexplain, "toxigen": build_toxigen,
            "reference": monitor_reference, "logs": monitor_log, "thresholds": evaluate_thresholds}
THROUGH_EVALUATE = ["label_true.jsonl", "lone_high_surrogate.jsonl", "extra_field.csv", "deep_nesting.json",
                    "latin1_bytes.jsonl", "huge_field.csv"]
STATS_ACCEPTS = {"data/empty_text.jsonl", "data/whitespace_text.jsonl"}  # stats reports empty texts; evaluate refuses


def cases() -> list:
    found = []
    for folder, command in COMMANDS.items():
        for file in sorted((CORPUS / folder).iterdir()):
            name = f"{folder}/{file.name}"
            args = evaluate_data(file) if name in STATS_ACCEPTS else command(file)
            found.append(pytest.param(name, args, file, id=name))
    for name in THROUGH_EVALUATE:
        file = CORPUS / "data" / name
        found.append(pytest.param(f"evaluate:{name}", evaluate_data(file), file, id=f"evaluate:{name}"))
    return found


CASES = cases()


def evaluate_good(*extra: str) -> list[str]:
    return ["evaluate", "--model", NO_MODEL, "--data", str(GOOD / "data.jsonl"), "--output-dir", "runs", "--quiet",
            *extra]


MISUSE = CORPUS / "misuse"
# Command-line misuses: (id, arguments, what the one error line says). Each fails before a model loads.
MISUSES = [
    ("batch size 0", evaluate_good("--batch-size", "0"), "config.model.batch_size: 0 is out of range; it must be >= 1"),
    ("batch size -4", evaluate_good("--batch-size", "-4"), "config.model.batch_size: -4 is out of range"),
    ("max_samples 0", evaluate_good("--max_samples", "0"), "config.max_samples: 0 is out of range"),
    ("n_bootstrap -1", evaluate_good("n_bootstrap=-1"), "config.n_bootstrap: -1 is out of range"),
    ("threshold 1.5", evaluate_good("--threshold", "1.5"), "config.threshold: 1.5 is out of range"),
    ("threshold NaN", evaluate_good("threshold=.nan"), "config.threshold: nan is not a number"),
    ("timeout 0", evaluate_good("model.timeout_s=0"), "config.model.timeout_s: 0.0 is out of range; it must be > 0"),
    ("port 70000", ["serve", "--model", NO_MODEL, "--port", "70000"], "config.port: 70000 is out of range"),
    ("learning rate 0", ["train", "--model", NO_MODEL, "learning_rate=0"], "config.learning_rate: 0.0 is out of range"),
    ("learning rate text", ["train", "--model", NO_MODEL, "learning_rate=fast"], "config.learning_rate: expected float"),
    ("output folder is a file", evaluate_good("--output-dir", str(GOOD / "data.jsonl")), "is a file, not a folder"),
    ("override not YAML", evaluate_good("threshold=[1,"), "'[1,' is not a YAML value"),
    ("override not a number", evaluate_good("threshold=abc"), "config.threshold: expected float, got 'abc'"),
    ("malformed template", evaluate_good("--template", str(MISUSE / "template_malformed.yaml")),
     f"{MISUSE / 'template_malformed.yaml'}:4: not valid YAML"),
    ("template a list", evaluate_good("--template", str(MISUSE / "template_list.yaml")), "a template must be a mapping"),
    ("malformed adapter_config.json", evaluate_good("--model", str(MISUSE / "adapter_malformed")),
     f"{MISUSE / 'adapter_malformed' / 'adapter_config.json'}: not valid JSON"),
    ("adapter for another base model", evaluate_good("--adapter", str(MISUSE / "adapter_other_base")),
     f"adapter {MISUSE / 'adapter_other_base'} was trained on base model some-org/other-base, not {NO_MODEL}"),
    ("adapter with another template", evaluate_good("--model", str(MISUSE / "adapter_compact"), "--template",
                                                    "baseline"),
     f"adapter {MISUSE / 'adapter_compact'} was trained with template compact, not baseline; drop --template"),
]


def foreign_database(path: Path) -> Path:
    """Another application's SQLite file."""
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY); PRAGMA user_version = 3;")
    connection.close()
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """{case id: {"code", "stdout", "stderr", "cwd"}} for every case, from one child process."""
    work = tmp_path_factory.mktemp("bad_inputs")
    log = work / "log" / "predictions.sqlite"
    PredictionLog(log).append([Prediction(
        id="r-0", request_id="r", position=0, created_utc=datetime(2025, 3, 1, tzinfo=timezone.utc),
        text_sha256="0" * 64, text=None, group="lgbtq", score=0.4, label="normal", threshold=0.5, model_version="m")])
    foreign = foreign_database(work / "foreign.sqlite")
    plan = [(param.id, param.values[1]) for param in CASES]
    plan.append(("logs/foreign.sqlite", monitor_log(foreign)))
    plan += [(f"misuse:{case_id}", args) for case_id, args, _ in MISUSES]
    specs = []
    for number, (case_id, args) in enumerate(plan):
        cwd = work / f"case{number}"
        cwd.mkdir()
        specs.append({"id": case_id, "cwd": str(cwd), "args": [str(log) if arg == LOG else arg for arg in args]})
    (work / "cases.json").write_text(json.dumps(specs))
    environment = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    child = subprocess.run([sys.executable, "-c", DRIVER, str(work / "cases.json")], capture_output=True, text=True,
                           env=environment, timeout=300, check=True)
    outcomes = json.loads(child.stdout.splitlines()[-1])
    return {spec["id"]: {**outcome, "cwd": Path(spec["cwd"])} for spec, outcome in zip(specs, outcomes)}


def check(result: dict, mention: Path | str) -> None:
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr
    assert str(mention) in errors[0], errors[0]
    assert result["code"] == 2, result
    assert list(result["cwd"].iterdir()) == []  # no run folder, output folder or report left behind


@pytest.mark.parametrize(("case_id", "args", "file"), CASES)
def test_bad_input_is_one_error_line_and_exit_2(results, case_id, args, file):
    check(results[case_id], file)


@pytest.mark.parametrize(("case_id", "args", "message"), MISUSES, ids=[case[0] for case in MISUSES])
def test_command_line_misuse_is_one_error_line_and_exit_2(results, case_id, args, message):
    check(results[f"misuse:{case_id}"], message)


def test_another_application_s_database(results, tmp_path_factory):
    result = results["logs/foreign.sqlite"]
    foreign = next(arg for arg in result["stderr"].split() if arg.endswith("foreign.sqlite"))
    check(result, Path(foreign))
    assert "is not a hatelens prediction log (user_version 3)" in result["stderr"]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60


def test_the_installed_entry_point_agrees(tmp_path):
    """One case through a real `python -m hatelens` process, the way a user runs it."""
    file = CORPUS / "data" / "label_true.jsonl"
    child = subprocess.run([sys.executable, "-m", "hatelens", *data_stats(file)], capture_output=True, text=True,
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert child.returncode == 2
    assert child.stderr == (f"error: {file}:2: label true is a boolean, not a class; write \"hate\" or \"normal\"\n")
