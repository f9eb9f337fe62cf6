"""Every registered network accepts any batch size and gives the right output shape."""
import numpy as np
import paddle
import pytest

from common.tasks import TASKS
from models import REGISTRY, build_model, has_dropout

CASES = [(task, name) for task, names in REGISTRY.items() for name in names]


@pytest.mark.parametrize("task,name", CASES)
@pytest.mark.parametrize("batch", [1, 7])
def test_forward_shape(task, name, batch):
    model = build_model(task, name)
    model.eval()
    shape = [batch, 1, 28, 28] if task == "mnist" else [batch, 13]
    out = model(paddle.to_tensor(np.random.rand(*shape).astype("float32")))
    assert out.shape == ([batch, 10] if task == "mnist" else [batch, 1])
    assert np.isfinite(out.numpy()).all()


def test_defaults_and_dropout_flags():
    assert TASKS["mnist"].train_defaults["model"] == "cnn" and TASKS["housing"].train_defaults["model"] == "linear"
    for name, task in TASKS.items():  # the task rows name registered networks only
        assert task.train_defaults["model"] in REGISTRY[name] and set(task.model_defaults) <= set(REGISTRY[name])
    assert has_dropout("mnist", "cnn") and has_dropout("mnist", "course_cnn")
    assert not has_dropout("housing", "linear")
    with pytest.raises(ValueError, match="has no dropout"):
        build_model("housing", "linear", dropout=0.5)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("mnist", "resnet9000")


def test_dropout_is_applied():
    model = build_model("mnist", "cnn", dropout=0.9)
    model.train()
    x = paddle.rand([4, 1, 28, 28])
    assert not np.allclose(model(x).numpy(), model(x).numpy()), "dropout 0.9 in train mode must be random"
