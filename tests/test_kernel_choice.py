import time

import torch

from vsrblocks.attention.gaussian_cross_frame import gaussian_cross_frame_attention
from vsrblocks.kernel_choice import kernel_benchmark, kernel_choices, measured_choice


def test_the_fastest_candidate_is_measured_once_and_kept():
    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.05)
        return "slow"

    def fast():
        calls["fast"] += 1
        return "fast"

    with kernel_benchmark(True):
        assert measured_choice(("test", "sleep"), {"slow": slow, "fast": fast}, default="slow") == "fast"
        measured_by_now = calls["slow"]
        for _ in range(3):
            assert measured_choice(("test", "sleep"), {"slow": slow, "fast": fast}, default="slow") == "fast"
    assert calls["slow"] == measured_by_now  # not run again once measured
    assert ((("test", "sleep"), torch.get_num_threads()), "fast") in kernel_choices().items()


def test_without_measuring_the_default_runs():
    with kernel_benchmark(False):
        assert measured_choice(("test", "off"), {"a": lambda: "a", "b": lambda: "b"}, default="b") == "b"
    assert not any(key[0] == ("test", "off") for key in kernel_choices())


def test_gaussian_attention_gives_the_same_read_outs_whichever_path_is_measured_faster():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 4, 6, 7, generator=g),
        torch.randn(1, 3, 4, 6, 7, generator=g),
        torch.randn(1, 3, 5, 6, 7, generator=g),
    )
    with torch.no_grad():
        fused = gaussian_cross_frame_attention(q, k, v, 2.0)  # measuring is off in tests: the fused default
        with kernel_benchmark(True):
            measured = [gaussian_cross_frame_attention(q, k, v, 2.0) for _ in range(2)]
    for out in measured:
        torch.testing.assert_close(out, fused, atol=1e-6, rtol=1e-5)
    assert any(key[0][0] == "gaussian_cross_frame" for key in kernel_choices())
