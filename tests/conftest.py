"""Shared fixtures. The shared tiny models and the model snapshot live in ``helpers.py``
(importable from every test module); ``reference.py`` holds the slow references.

``pytest -m "not slow"`` skips the tests marked ``slow`` (real-size models, the notebook,
subprocesses) for a fast loop; the README's test command runs everything."""

import pytest
import torch
from helpers import tiny_cnn


@pytest.fixture
def tiny():
    """A fresh tiny CNN (float32, 10 classes, eval mode)."""
    return tiny_cnn()


@pytest.fixture(scope="session")
def embedded():
    """The embedded pretrained EfficientNet-Lite0 (``load_model("efficientnet_lite0")``), loaded
    once for every test; the package never modifies a model, and a test that wants to change it
    works on a deep copy."""
    from pullbacks.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(autouse=True)
def user_settings_unchanged():
    """No test (and so no call of the package) leaves torch's global settings changed."""
    before = (torch.is_grad_enabled(), torch.get_num_threads(), torch._C._len_torch_function_stack())
    yield
    assert (torch.is_grad_enabled(), torch.get_num_threads(), torch._C._len_torch_function_stack()) == before
