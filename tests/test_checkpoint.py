"""Checkpoints are refused with a reason when broken or foreign, and never start a run silently."""
import json

import pytest

import train
from common import checkpoint
from common.checkpoint import CheckpointError



@pytest.fixture(scope="module")
def housing_run(data_dir, tmp_path_factory):
    """A finished 3-epoch housing run (three checkpoints + best)."""
    out = tmp_path_factory.mktemp("housing")
    train.run(train.TrainConfig("housing", data_dir=str(data_dir), output=str(out), epochs=3, progress=False))
    return out


def ckpts(out):
    return sorted((out / "checkpoints").glob("ckpt-*.pdckpt"))


def test_layout_and_contents(housing_run):
    files = ckpts(housing_run)
    assert len(files) == 3 and (housing_run / "checkpoints" / "best.pdckpt").is_file()
    assert (housing_run / "checkpoints" / "latest").read_text().strip() == files[-1].name
    state = checkpoint.load(files[-1], "housing", "linear")
    assert state["progress"]["epoch"] == 3 and state["progress"]["global_step"] == 3 * 13  # 404 rows / batch 32 = 13 steps an epoch
    assert {"python", "numpy", "paddle"} <= set(state["rng"])
    assert "LR_Scheduler" in state["optimizer_state"]
    assert state["config"]["lr"] == 0.05 and len(state["stats"]["feature_mean"]) == 13
    assert len(state["progress"]["history"]) == 3


def test_truncated_checkpoint_refused(housing_run, tmp_path):
    bad = tmp_path / "t.pdckpt"
    bad.write_bytes(ckpts(housing_run)[-1].read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(bad)


def test_flipped_byte_refused(housing_run, tmp_path):
    data = bytearray(ckpts(housing_run)[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "f.pdckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(bad)


def test_foreign_file_refused(tmp_path):
    bad = tmp_path / "x.pdckpt"
    bad.write_bytes(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(CheckpointError, match="not a toolkit checkpoint"):
        checkpoint.load(bad)


def test_other_task_refused(housing_run):
    with pytest.raises(CheckpointError, match="is a housing/linear checkpoint, not mnist"):
        checkpoint.load(ckpts(housing_run)[-1], task="mnist")
    with pytest.raises(CheckpointError, match="not housing/mlp"):
        checkpoint.load(ckpts(housing_run)[-1], task="housing", model="mlp")


def test_resume_auto_falls_back_past_corrupt_latest(housing_run, data_dir, tmp_path, train_cli):
    out = tmp_path / "run"
    train_cli("housing", "--epochs", "3", "--data-dir", str(data_dir), "--output", str(out), "--no-progress")
    newest = ckpts(out)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # as if the disk had been cut mid-write
    status, stdout, _ = train_cli("housing", "--epochs", "4", "--resume", "auto", "--data-dir", str(data_dir),
                                  "--output", str(out), "--no-progress")
    assert status == 0 and "truncated or corrupt" in stdout and "falling back" in stdout
    assert "resuming from" in stdout and "ckpt-000000026" in stdout  # epoch 2's checkpoint
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_resume_refuses_when_nothing_is_usable(data_dir, tmp_path, train_cli):
    out = tmp_path / "run"
    train_cli("housing", "--epochs", "1", "--data-dir", str(data_dir), "--output", str(out), "--no-progress")
    for path in ckpts(out):
        path.write_bytes(b"garbage")
    status, _, stderr = train_cli("housing", "--resume", "--data-dir", str(data_dir), "--output", str(out))
    assert status == 2 and "no usable checkpoint" in stderr


def test_existing_run_not_overwritten_without_resume(housing_run, data_dir, train_cli):
    before = {p.name: p.stat().st_mtime_ns for p in ckpts(housing_run)}
    status, _, stderr = train_cli("housing", "--data-dir", str(data_dir), "--output", str(housing_run))
    assert status == 2 and "already holds checkpoints" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in ckpts(housing_run)} == before


def test_resume_refuses_changed_identity(housing_run, data_dir, train_cli):
    status, _, stderr = train_cli("housing", "--resume", "--lr", "0.1", "--data-dir", str(data_dir),
                                  "--output", str(housing_run))
    assert status == 2 and "--lr 0.1 (checkpoint: 0.05)" in stderr


def test_resume_path_of_other_model_refused(housing_run, data_dir, tmp_path, train_cli):
    status, _, stderr = train_cli("housing", "--model", "mlp", "--resume", str(ckpts(housing_run)[-1]),
                                  "--data-dir", str(data_dir), "--output", str(tmp_path))
    assert status == 2 and "not housing/mlp" in stderr


def test_resume_by_path_continues_in_that_runs_folder(data_dir, tmp_path, train_cli, monkeypatch):
    # Resuming a non-default model by path, without --output, must not write into runs/housing-linear.
    out = tmp_path / "mlp-run"
    train_cli("housing", "--model", "mlp", "--epochs", "2", "--data-dir", str(data_dir), "--output", str(out),
              "--no-progress")
    monkeypatch.chdir(tmp_path)  # where runs/housing-linear would appear
    status, stdout, _ = train_cli("housing", "--epochs", "3", "--resume", str(ckpts(out)[-1]),
                                  "--data-dir", str(data_dir), "--no-progress")
    assert status == 0 and "resuming from" in stdout and str(out) in stdout
    assert not (tmp_path / "runs").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_max_steps_is_not_inherited_on_resume(data_dir, tmp_path, train_cli):
    out = tmp_path / "run"
    train_cli("housing", "--epochs", "2", "--max-steps", "5", "--data-dir", str(data_dir), "--output", str(out),
              "--no-progress")
    train_cli("housing", "--resume", "auto", "--epochs", "2", "--data-dir", str(data_dir), "--output", str(out),
              "--no-progress")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["global_step"] == 26
