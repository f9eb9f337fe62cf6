"""The course runner (experiments/course.py) on a tiny budget, and docs/COURSE.md's commands run
against the real command lines, so the guide cannot drift from the code."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import course
from train.cli import main as train_main
from train.config import config_from_args, resolve

from .conftest import ROOT, run_module

GUIDE = ROOT / "docs" / "COURSE.md"
# Appended to every MNIST command of the guide that the test runs: a few steps, one small evaluation,
# in this process (data-parallel training is tests/test_distributed.py's and tests/test_resume.py's).
MNIST_BUDGET = ["--train-subset", "300", "--epochs", "1", "--val-size", "100", "--procs", "1", "--no-progress"]
HOUSING_BUDGET = ["--epochs", "3", "--no-progress"]


def runner(tmp_path: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the course runner into ``tmp_path`` (never docs/) on a tiny budget."""
    argv = [sys.executable, "-m", "experiments.course", "--only", "baseline", "--no-housing",
            "--train-subset", "300", "--epochs", "1", "--val-size", "100", "--procs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--results", str(tmp_path / "RESULTS.md"),
            "--figure", str(tmp_path / "fig" / "val_acc.png"), "--data-dir", str(data_dir), *extra]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.e2e
def test_runner_writes_table_and_figure_then_skips_finished(tmp_path, data_dir):
    first = runner(tmp_path, data_dir)
    assert first.stdout.count("[train] epoch 1/1") == 1
    table = (tmp_path / "RESULTS.md").read_text()
    png = tmp_path / "fig" / "val_acc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](fig/val_acc.png)" in table
    row = next(line for line in table.splitlines() if line.startswith("| baseline |"))
    acc = float(row.split("|")[3].split()[0])
    assert 0.0 < acc <= 1.0  # a real test accuracy on the 10,000 test images
    assert f"--output {tmp_path / 'runs' / 'mnist' / 'baseline'}" in row and "python -m train mnist" in row
    assert "| sgd |" in table and "not run" in table  # variants outside --only are listed
    metrics = (tmp_path / "runs" / "mnist" / "baseline" / "metrics.jsonl").read_text()

    second = runner(tmp_path, data_dir)
    assert second.stdout.count("finished, skipped") == 1
    assert "[train]" not in second.stdout  # nothing retrained
    assert (tmp_path / "runs" / "mnist" / "baseline" / "metrics.jsonl").read_text() == metrics


def _fake_run(folder: Path, epochs_done: int, epochs: int) -> None:
    """A run folder as `python -m train` leaves it after ``epochs_done`` of ``epochs`` epochs."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "ckpt-000000010.pdckpt").write_bytes(b"x")
    rows = [{"epoch": e, "epochs": epochs, "global_step": 10 * e, "epoch_seconds": 1.0, "val_acc": 0.9,
             "test_acc": 0.9} for e in range(1, epochs_done + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _calls(monkeypatch, tmp_path, only: str) -> list[list[str]]:
    """Run the runner's main in-process with training replaced by a recorder; the argv it would run."""
    calls = []
    monkeypatch.setattr(course.subprocess, "run", lambda argv, cwd, check: calls.append(argv) or
                        subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(course, "write_report", lambda *a: None)
    course.main(["--only", only, "--no-housing", "--runs-dir", str(tmp_path)])
    return calls


def test_half_trained_variant_resumes_and_ten_epochs_extend_five(monkeypatch, tmp_path):
    _fake_run(tmp_path / "mnist" / "sgd", epochs_done=2, epochs=5)       # interrupted in epoch 3
    _fake_run(tmp_path / "mnist" / "baseline", epochs_done=5, epochs=5)  # finished
    calls = _calls(monkeypatch, tmp_path, "baseline,epochs10,sgd")
    assert len(calls) == 2  # baseline skipped
    resume, extend = sorted(calls, key=lambda argv: "epochs10" in argv[argv.index("--output") + 1])
    assert extend[extend.index("--output") + 1].endswith("mnist/epochs10") and "--resume" in extend
    assert extend[extend.index("--epochs") + 1] == "10"
    assert (tmp_path / "mnist" / "epochs10" / "metrics.jsonl").read_text() == \
        (tmp_path / "mnist" / "baseline" / "metrics.jsonl").read_text()  # epochs 1-5 copied
    assert resume[resume.index("--output") + 1].endswith("mnist/sgd") and "--resume" in resume


def test_every_variant_changes_one_thing_from_the_course_baseline():
    base = course.variant_command("mnist", course.VARIANTS[0], Path("r"), {}, None)
    assert base[3:] == ["mnist", "--model", "course_cnn", "--optimizer", "adam", "--lr", "0.01",
                        "--batch-size", "100", "--epochs", "5", "--lr-schedule", "constant",
                        "--warmup-epochs", "0", "--output", "r/baseline"]
    for v in course.VARIANTS:
        argv = course.variant_command("mnist", v, Path("r"), {"--epochs": "1"}, None)
        cfg = resolve(config_from_args(argv[3:]))  # every variant is a valid `python -m train` command
        assert cfg.epochs == 1 and cfg.batch_size == 100


# --- the guide ------------------------------------------------------------------------------------
def guide_commands() -> list[str]:
    """Command lines of the guide's ```bash blocks (continuation lines joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def train_argv(command: str) -> list[str] | None:
    """The `python -m train` arguments of a guide line (also behind Paddle's launcher), else None."""
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "train"]:
        return words[3:]
    if "train/__main__.py" in words:
        return words[words.index("train/__main__.py") + 1:]
    return None


def test_guide_covers_the_eight_chapters():
    text = GUIDE.read_text()
    for chapter in ("data processing", "network structure", "loss function", "optimisation algorithm",
                    "resource configuration", "training debugging and tuning", "resuming training",
                    "dynamic-to-static deployment"):
        assert re.search(rf"^## \d\. {chapter}", text, re.MULTILINE | re.IGNORECASE), chapter
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (GUIDE.parent / picture).is_file(), picture


def test_guide_train_commands_parse():
    """Every `python -m train` line of the guide is accepted by the real parser and validation."""
    argvs = [a for a in map(train_argv, guide_commands()) if a is not None]
    assert len(argvs) >= 10
    for argv in argvs:
        cfg = config_from_args(argv)
        if cfg.resume is None:
            resolve(cfg)


def flags_of(argv: list[str]) -> dict:
    """``{flag: value or None}`` of a command line, and its positional words under key ''."""
    flags, words, i = {}, [], 0
    while i < len(argv):
        if argv[i].startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            flags[argv[i]] = value
            i += 2 if value is not None else 1
        else:
            words.append(argv[i])
            i += 1
    return {**flags, "": words}


def test_guide_sweep_commands_are_the_runners():
    """Guide lines writing to runs/course/<task>/<name> are exactly the runner's command for that row."""
    variants = {("mnist", v.name): v for v in course.VARIANTS}
    variants.update({("housing", v.name): v for v in course.HOUSING_VARIANTS})
    checked = 0
    for command in guide_commands():
        argv = train_argv(command)
        if argv is None or "--output" not in argv or not argv[argv.index("--output") + 1].startswith("runs/course/"):
            continue
        _, _, task, name = argv[argv.index("--output") + 1].split("/")
        expected = course.variant_command(task, variants[task, name], Path("runs/course") / task, {}, None)
        assert flags_of(shlex.split(command)) == flags_of(expected), command
        checked += 1
    assert checked >= 5


def test_guide_train_commands_run(tmp_path, data_dir, thousand_test_digits):
    """The guide's other single-process training commands, run with a tiny budget appended.

    In-process through ``train.cli.main`` (what ``python -m train`` calls), which saves a Paddle
    import per command. Skipped here: the sweep's rows (runs/course/...: checked against the runner
    above, whose commands the runner test trains), the data-parallel launch (tests/test_distributed.py)
    and the GPU line (needs a GPU; parsed above).
    """
    seen, ran = set(), 0
    for command in guide_commands():
        argv = train_argv(command)
        if argv is None or not command.startswith("python -m train") or "gpu" in argv:
            continue
        if "--output" in argv and argv[argv.index("--output") + 1].startswith("runs/course/"):
            continue
        argv = [a for a in argv if a != "--no-progress"]
        out = argv[argv.index("--output") + 1] if "--output" in argv else f"runs/{argv[0]}"
        # a resume line continues the run the guide started above it, in the same tmp folder
        key = tuple(a for a in argv if a not in ("--resume", "auto"))
        if key in seen:
            continue
        seen.add(key)
        budget = MNIST_BUDGET if argv[0] == "mnist" else HOUSING_BUDGET
        assert train_main([*argv, *budget, "--data-dir", str(data_dir), "--output", str(tmp_path / out)]) == 0, command
        ran += 1
    assert ran >= 4


@pytest.mark.e2e
def test_guide_export_and_serve_flags_exist():
    """Each export/serve line uses only flags that `--help` lists (the commands need a trained model)."""
    helps = {}
    for command in guide_commands():
        words = shlex.split(command)
        if words[:3] in (["python", "-m", "export"], ["python", "-m", "serve"]):
            module = words[2]
            if module not in helps:
                helps[module] = run_module(module, "--help", timeout=120).stdout
            for flag in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
                assert re.search(rf"(^|[\s\[]){re.escape(flag)}\b", helps[module]), f"{command}: {flag}"
    assert set(helps) == {"export", "serve"}
