"""Training end to end on the real data: convergence, outputs a person looks at, CLI errors."""
import io
import json

import numpy as np
import paddle
import pytest

import train
from common.tasks import TASKS
from train.launch import show_worker_output

from .conftest import run_module


def closed_form_test_mse(data_dir, val_size: int) -> float:
    """Least-squares optimum fit on exactly the rows training uses, scored on the test rows."""
    s = TASKS["housing"].load_splits(str(data_dir), val_size)
    design = lambda x: np.c_[x, np.ones(len(x))]  # noqa: E731
    w = np.linalg.lstsq(design(s.train.x), s.train.y, rcond=None)[0]
    err = (design(s.test.x) @ w - s.test.y) * s.stats["target_std"]
    return float(np.mean(err ** 2))


def test_closed_form_matches_course_figure(data_dir):
    # The course's split (first 404 rows, train-only normalisation) gives test MSE 32.80.
    assert closed_form_test_mse(data_dir, 0) == pytest.approx(32.80, abs=0.01)


def test_housing_reaches_least_squares_optimum(data_dir, tmp_path):
    result = train.run(train.TrainConfig("housing", data_dir=str(data_dir), output=str(tmp_path), progress=False))
    optimum = closed_form_test_mse(data_dir, 0)  # the default refits on all 404 training rows
    final = result["final"]
    assert abs(final["test_mse"] - optimum) / optimum < 0.10, (final["test_mse"], optimum)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 101))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optimizer"] == "sgd" and saved["epochs"] == 100 and saved["model"] == "linear"
    assert saved["val_size"] == 0 and result["best"]["epoch"] == 100  # no selection: the last epoch


def test_per_model_defaults_and_generated_help():
    from train.config import build_parser, resolve

    assert resolve(train.TrainConfig("housing", model="mlp")).weight_decay == 0.1
    assert resolve(train.TrainConfig("housing")).weight_decay == 0.0
    assert resolve(train.TrainConfig("housing", model="mlp", weight_decay=0.0)).weight_decay == 0.0
    text = " ".join(build_parser().format_help().split())
    assert "cosine (to 0 at the end) (default: mnist cosine, housing cosine)" in text
    assert "(default: 0.0; housing mlp: 0.1)" in text


def test_mnist_short_run_learns(data_dir, tmp_path, train_cli, thousand_test_digits):
    # 4000 real training images, 2 epochs of the course CNN (its settings: a constant learning rate),
    # evaluated once at the end: well above chance (10%). The command line's code, VisualDL on.
    status, stdout, _ = train_cli("mnist", "--model", "course_cnn", "--train-subset", "4000", "--epochs", "2",
                                  "--batch-size", "128", "--optimizer", "adam", "--lr", "0.002", "--lr-schedule",
                                  "constant", "--warmup-epochs", "0", "--val-size", "500", "--eval-every", "2",
                                  "--procs", "1", "--data-dir", str(data_dir), "--output", str(tmp_path),
                                  "--log", "visualdl", "--no-progress")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert status == 0 and rows[-1]["test_acc"] > 0.90, rows[-1]
    assert "test_acc" not in rows[0], "--eval-every 2 evaluates the second epoch only"
    assert "epoch 2/2" in stdout
    assert list((tmp_path / "vdl").iterdir()), "VisualDL wrote no log"


def test_cli_help_explains_every_flag(train_cli):
    status, out, _ = train_cli("--help")
    assert status == 0
    for flag in ("--model", "--epochs", "--batch-size", "--optimizer", "--lr", "--lr-schedule", "--warmup-epochs",
                 "--weight-decay", "--dropout", "--seed", "--device", "--num-workers", "--data-dir", "--output",
                 "--resume", "--eval-every", "--early-stop", "--log", "--save-every-steps", "--amp", "--procs", "--augment"):
        assert flag in out


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    pytest.param(["--device", "gpu"], "no CUDA", marks=pytest.mark.skipif(
        paddle.device.is_compiled_with_cuda(), reason="this Paddle has CUDA: the no-GPU error cannot occur")),
    (["--dropout", "0.5", "--model", "linear"], "has no dropout"),
    (["--eval-every", "0"], "--eval-every must be at least 1"),
    (["--keep-last", "0"], "--keep-last must be at least 1"),
    (["--early-stop", "-1"], "--early-stop cannot be negative"),
    (["--val-size", "60000"], "leaves no training data"),
    (["--augment", "light", "--model", "linear"], "--augment 'light' is not available for house prices"),
    (["--procs", "two"], "--procs must be auto or a whole number"),
    (["--procs", "2", "--batch-size", "101"], "--batch-size 101 does not split evenly over 2 processes"),
])
def test_cli_rejects_bad_flags(tmp_path, data_dir, args, message, train_cli):
    task = "housing" if "linear" in args else "mnist"
    status, _, err = train_cli(task, *args, "--data-dir", str(data_dir), "--output", str(tmp_path))
    assert status == 2 and message in err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.e2e
def test_missing_data_names_file_and_folder(tmp_path):
    # The command line as a process: a user error is one line on stderr, exit status 2, no traceback.
    proc = run_module("train", "housing", "--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"),
                      check=False)
    assert proc.returncode == 2
    assert "housing.data not found in" in proc.stderr and str(tmp_path / "nowhere") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_early_stopping_uses_validation(data_dir, tmp_path):
    # A huge learning rate cannot improve for long: patience 2 stops well before 50 epochs.
    result = train.run(train.TrainConfig("housing", data_dir=str(data_dir), output=str(tmp_path), epochs=50,
                                         lr=0.5, lr_schedule="constant", early_stop=2, val_size=40, progress=False))
    assert result["final"]["epoch"] < 50
    assert result["best"]["epoch"] == result["final"]["epoch"] - 2


def test_dataloader_workers_do_not_change_the_run(data_dir, tmp_path):
    # Worker processes only fetch; the order comes from the seeded sampler, so results are identical.
    common = dict(data_dir=str(data_dir), epochs=3, model="mlp", dropout=0.1, progress=False)
    inline = train.run(train.TrainConfig("housing", output=str(tmp_path / "w0"), num_workers=0, **common))
    workers = train.run(train.TrainConfig("housing", output=str(tmp_path / "w2"), num_workers=2, **common))
    assert inline["weights_sha256"] == workers["weights_sha256"]
    assert inline["final"]["test_mse"] == workers["final"]["test_mse"]


# What paddle.distributed.launch prints for a 2-process run of `python -m train mnist`:
# rank 0's tqdm refreshes arrive as separate lines, each after a blank one, between the launcher's own.
LAUNCHER_OUTPUT = [
    "LAUNCH INFO 2026-11-23 17:40:01,113 -----------  Configuration  ----------------------\n",
    "[train] mnist/cnn on cpu x2: 8192 train, 5000 val, 10000 test samples -> /tmp/tq\n",
    "\n",
    "epoch 1/1:   3%|▎         | 1/32 [00:00<00:05,  5.22step/s]\n",
    "\n",
    "epoch 1/1:   6%|▋         | 2/32 [00:00<00:05,  5.15step/s, loss=2.7998, lr=2.50e-04]\n",
    "\n",
    "[train] epoch 1/1 train_loss=1.4843 val_loss=0.3023 val_acc=0.9202 test_acc=0.9272\n",
]


def test_launcher_output_keeps_epoch_lines_and_drops_bar_refreshes_off_a_terminal():
    out = io.StringIO()
    show_worker_output(LAUNCHER_OUTPUT, out, tty=False)
    assert out.getvalue().splitlines() == [LAUNCHER_OUTPUT[1].rstrip(), LAUNCHER_OUTPUT[-1].rstrip()]


def test_launcher_output_redraws_the_bar_in_place_on_a_terminal():
    out = io.StringIO()
    show_worker_output(LAUNCHER_OUTPUT, out, tty=True)
    text = out.getvalue()
    assert text.count("\n") == 2  # the two [train] lines; every refresh starts with "\r" instead
    assert text.count("\repoch 1/1:") == 2 and text.endswith("\r\x1b[K" + LAUNCHER_OUTPUT[-1])
