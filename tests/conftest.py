import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from vsrblocks.kernel_choice import kernel_benchmark

# CI: bounded, reproducible, no per-example deadline (a 2-core runner is slow and noisy).
settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def kernels_not_timed():
    """Every test takes the default kernels of vsrblocks.kernel_choice, not the ones this machine's timings pick,
    so that results do not depend on the machine or its load; tests of the measured choice turn it on."""
    with kernel_benchmark(False):
        yield
