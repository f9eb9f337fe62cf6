"""notebooks/quickstart.ipynb: committed without outputs, and runs top to bottom without an error.

The notebook runs in a Jupyter kernel of this project's own interpreter (a kernel spec made for the
test, pointing at ``sys.executable``), started in notebooks/ as Jupyter starts it, with a cell after
the "parameters" cell that sets a small budget (papermill's convention). Any cell's error fails the
test; then the outputs are checked for what a learner should see.
"""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT
from .servers import free_port

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
KERNEL = "paddle-d2s-test"
# A few training steps: the test is about the notebook's path, not the accuracy it reaches.
BUDGET = {"HOUSING_EPOCHS": 3, "MNIST_EPOCHS": 1, "MNIST_TRAIN_SUBSET": 1024, "MNIST_VAL_SIZE": 100,
          "STOP_AFTER_STEPS": 2, "SAVE_EVERY_STEPS": 1}


def read_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    (index,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    return index


def test_committed_notebook_has_no_outputs():
    """Outputs, execution counts and widget state stay out of git (they would bloat diffs and leak paths)."""
    notebook = read_notebook()
    dirty = [i for i, c in enumerate(notebook.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"cells {dirty} have outputs: clear them (Jupyter: Edit > Clear Outputs of All Cells)"
    assert "widgets" not in notebook.metadata, "saved widget state: clear it before committing"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    parameters = notebook.cells[parameters_cell(notebook)].source
    for name in BUDGET:
        assert f"\n{name} = " in "\n" + parameters, f"{name} is not a parameter of the notebook"


def project_kernel(folder: Path) -> Path:
    """A kernel spec that runs this interpreter (so this project's packages), in a JUPYTER_PATH folder."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "paddle-d2s (tests)", "language": "python"}))
    return folder


@pytest.mark.e2e
def test_notebook_runs_top_to_bottom(tmp_path, data_dir, monkeypatch):
    notebook, port = read_notebook(), free_port()
    overrides = {**BUDGET, "DATA_DIR": str(data_dir), "WORK": str(tmp_path / "work"), "PORT": port}
    injected = "\n".join(f"{name} = {value!r}" for name, value in overrides.items())
    injected += f"\nimport sys\nassert sys.executable == {sys.executable!r}, sys.executable  # the project's Python"
    notebook.cells.insert(parameters_cell(notebook) + 1, nbformat.v4.new_code_cell(injected))

    monkeypatch.setenv("JUPYTER_PATH", str(project_kernel(tmp_path / "jupyter")))
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=300, startup_timeout=120,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    finally:
        nbformat.write(notebook, tmp_path / "executed.ipynb")  # for a look after a failure

    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "stopped at global step 2" in text
    assert "resuming from" in text and "finished at global step 4" in text  # 1024 images / 256 per step
    assert "the server reads a " in text and "predicted price $" in text and "server stopped" in text
    displayed = [kind for c in notebook.cells for o in c.get("outputs", []) for kind in o.get("data", {})]
    assert displayed.count("image/png") == 3, "two training curves and the drawn digit"
    assert "application/vnd.jupyter.widget-view+json" in displayed, "tqdm.auto's notebook progress bars"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the notebook's last cell must stop the server"
