import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import sweeplib  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random GPT-Neo checkpoint, d_model 64, 2 layers x 4 heads, GPT-2's vocabulary."""
    return sweeplib.make_model(tmp_path_factory.mktemp("model") / "m64")


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """d_model 128, 4 layers: units of ~0.05 s at batch size 16, for sweeps that are interrupted."""
    return sweeplib.make_model(tmp_path_factory.mktemp("model") / "m128", d_model=128, layers=4)
