import os

import numpy as np
import pytest

import bptt
from bptt.tape import get_default_dtype, set_default_dtype

#: Set by .ci/run: the cross-checks against PyTorch must run there, so a missing torch fails
#: the suite instead of skipping them.
REQUIRE_TORCH = os.environ.get("BPTT_REQUIRE_TORCH") == "1"


def pytest_configure(config):
    if REQUIRE_TORCH:
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise pytest.UsageError(f"BPTT_REQUIRE_TORCH=1 but torch cannot be imported ({err}); "
                                    f"the cross-checks against PyTorch would be skipped") from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # with torch required, a test that skips for want of it (an importorskip that fails for
    # another reason, a broken torch install) is a failure
    report = (yield).get_result()
    if REQUIRE_TORCH and report.skipped and "torch" in str(report.longrepr):
        report.outcome = "failed"


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
