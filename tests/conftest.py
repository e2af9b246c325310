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

#: The thread count every test runs at, and another one for the numerically sensitive tests: the number of threads
#: sets how a reduction is split, so its summation order, as another CPU's kernels do. A tolerance that only one
#: machine's rounding meets then fails here first (mark such tests ``thread_counts``, see below). The kernels of
#: an AVX2-only CPU can be had on a newer one too, per process:
#: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 pytest -m thread_counts``.
DEFAULT_THREADS = torch.get_num_threads()
OTHER_THREADS = 1 if DEFAULT_THREADS > 1 else 2


def pytest_generate_tests(metafunc):
    """A ``thread_counts`` test runs at both counts, grouped per module, so that a module fixture requesting
    ``num_threads`` (one model run shared by several checks) is computed once per count."""
    if metafunc.definition.get_closest_marker("thread_counts") is None:
        return
    if "num_threads" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: a thread_counts test must request the num_threads fixture"
        )
    metafunc.parametrize(
        "num_threads", [DEFAULT_THREADS, OTHER_THREADS], indirect=True, scope="module", ids=lambda n: f"threads{n}"
    )


@pytest.fixture(scope="module")
def num_threads(request):
    """The thread count torch runs at while the tests (and module fixtures) that request it run: the default one,
    or the one a ``thread_counts`` test is parametrised with."""
    count = getattr(request, "param", DEFAULT_THREADS)
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    yield count
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def kernels_not_timed():
    """Every test takes the default kernels of vsrblocks.kernel_choice, not the ones this machine's timings pick,
    so that results do not depend on the machine or its load; tests of the measured choice turn it on."""
    with kernel_benchmark(False):
        yield
