import numpy as np
import pytest

import bptt
from bptt.tape import get_default_dtype, set_default_dtype


@pytest.fixture(autouse=True)
def _isolated():
    """Each test starts from the package-wide generator seeded at 0 and float32 as default dtype."""
    dtype = get_default_dtype()
    bptt.seed(0)
    yield
    set_default_dtype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
