import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference_models
from reference_models.inference.upscale import (
    center_window,
    clip_windows,
    forward_tiled,
    reflect_index,
    tile_spans,
    upscale_clip,
    upscale_frames,
)
from tests.reference_models.helpers import FrameIndexVSR, LocalVSR
from tests.strategies import seeded_rand, seeds


def basicsr_reflection_indices(crt_idx: int, num_total: int, num_frames: int) -> list[int]:
    """BasicSR ``generate_frame_indices(crt_idx, max_frame_num, num_frames, padding="reflection")``."""
    last = num_total - 1
    indices = []
    for i in range(crt_idx - num_frames // 2, crt_idx + num_frames // 2 + 1):
        indices.append(-i if i < 0 else (2 * last - i if i > last else i))
    return indices


def fingerprint_clip(length: int) -> torch.Tensor:
    """Frame ``k`` filled with the value ``k``."""
    return torch.arange(length, dtype=torch.float32).view(length, 1, 1, 1).expand(length, 3, 2, 3).clone()


def decode_center(value: float, num_frames: int) -> list[int]:
    value = int(round(value))
    return [(value // 10**j) % 10 for j in range(num_frames)]


@pytest.mark.parametrize("num_frames", [1, 3, 5, 7])
def test_center_window_is_basicsr_reflection(num_frames):
    for length in range(num_frames // 2 + 1, 13):
        for i in range(length):
            assert center_window(i, length, num_frames) == basicsr_reflection_indices(i, length, num_frames)


def test_reflect_index_short_clips_stay_in_range():
    for length in range(1, 5):
        for i in range(-10, 15):
            assert 0 <= reflect_index(i, length) < length
    assert center_window(0, 2, 7) == [1, 0, 1, 0, 1, 0, 1]


@given(length=st.integers(1, 10), num_frames=st.sampled_from([1, 3, 5]), batch=st.integers(1, 4))
def test_center_mode_feeds_each_frame_its_reflected_window(length, num_frames, batch):
    model = FrameIndexVSR(num_frames, "center")
    out = upscale_clip(model, fingerprint_clip(length), batch=batch)
    assert out.shape == (length, 3, 2, 3)
    for i in range(length):
        assert decode_center(out[i, 0, 0, 0].item(), num_frames) == center_window(i, length, num_frames)


@given(length=st.integers(1, 9), num_frames=st.sampled_from([3, 5]), batch=st.integers(1, 3), seed=seeds)
def test_center_output_equals_model_on_its_padded_window(length, num_frames, batch, seed):
    model = LocalVSR(num_frames=num_frames, scale=2, seed=seed).eval()
    clip = seeded_rand((length, 3, 5, 7), seed)
    out = upscale_clip(model, clip, batch=batch)
    with torch.no_grad():
        for i in range(length):
            expected = model(clip[center_window(i, length, num_frames)][None])[0]
            torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


@given(length=st.integers(1, 30), num_frames=st.integers(1, 8), data=st.data())
def test_clip_windows_partition_the_clip_by_nearest_centre(length, num_frames, data):
    stride = data.draw(st.integers(1, num_frames))
    plan = clip_windows(length, num_frames, stride)
    kept = [t for _, lo, hi in plan for t in range(lo, hi)]
    assert kept == list(range(length))
    starts = [indices[0] for indices, _, _ in plan]
    for indices, lo, hi in plan:
        assert len(indices) == num_frames and all(0 <= i < length for i in indices)
        if length >= num_frames:
            assert indices == list(range(indices[0], indices[0] + num_frames))
            for t in range(lo, hi):
                distance = abs(t - (indices[0] + (num_frames - 1) / 2))
                assert distance == min(abs(t - (s + (num_frames - 1) / 2)) for s in starts)
        else:
            assert indices == [reflect_index(j, length) for j in range(num_frames)]
    if length >= num_frames:
        assert starts[0] == 0 and starts[-1] == length - num_frames


@given(length=st.integers(1, 12), num_frames=st.sampled_from([2, 3, 5]), batch=st.integers(1, 3), data=st.data())
def test_all_mode_keeps_each_frame_from_its_planned_window(length, num_frames, batch, data):
    stride = data.draw(st.integers(1, num_frames))
    model = FrameIndexVSR(num_frames, "all")
    out = upscale_clip(model, fingerprint_clip(length), batch=batch, clip_stride=stride)
    assert out.shape == (length, 3, 2, 3)
    plan = clip_windows(length, num_frames, stride)
    expected_position = {t: t - indices[0] for indices, lo, hi in plan for t in range(lo, hi)}
    for t in range(length):
        position, frame = divmod(int(out[t, 0, 0, 0].item()), 1000)
        assert frame == t
        assert position == expected_position[t]


@given(length=st.integers(1, 11), batch=st.integers(1, 3), seed=seeds)
def test_all_output_equals_model_on_its_window(length, batch, seed):
    model = LocalVSR(num_frames=4, scale=3, output_mode="all", seed=seed).eval()
    clip = seeded_rand((length, 3, 4, 6), seed)
    out = upscale_clip(model, clip, batch=batch)
    with torch.no_grad():
        for indices, lo, hi in clip_windows(length, 4):
            window_out = model(clip[indices][None])[0]
            torch.testing.assert_close(out[lo:hi], window_out[lo - indices[0] : hi - indices[0]], atol=1e-5, rtol=1e-5)


def test_tile_spans_cover_with_at_least_the_overlap():
    for size in range(1, 60):
        spans = tile_spans(size, 16, 5)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(b - a == min(16, size) for a, b in spans)
        assert all(prev[1] - nxt[0] >= 5 for prev, nxt in zip(spans, spans[1:]))


@pytest.mark.parametrize("tile, overlap", [(8, 8), (8, 9), (8, -1)])
def test_tile_spans_reject_bad_overlap(tile, overlap):
    with pytest.raises(ValueError, match="tile_overlap"):
        tile_spans(20, tile, overlap)


@given(
    h=st.integers(5, 27),
    w=st.integers(5, 27),
    tile=st.integers(9, 14),
    overlap=st.sampled_from([4, 5, 8]),
    mode=st.sampled_from(["center", "all"]),
    seed=seeds,
)
def test_tiled_equals_untiled_for_a_local_model(h, w, tile, overlap, mode, seed):
    """The blend weights vanish within overlap // 4 LR pixels of a cut, so a model whose receptive field
    reaches 1 LR pixel gives the untiled result everywhere once that margin is >= 1."""
    model = LocalVSR(num_frames=3, scale=2, output_mode=mode, seed=seed).eval()
    clip = seeded_rand((2, 3, 3, h, w), seed)
    with torch.no_grad():
        full = model(clip)
        tiled = forward_tiled(model, clip, tile, overlap)
    torch.testing.assert_close(tiled, full, atol=1e-4, rtol=0)


def test_tiling_without_margin_differs_near_cuts():
    """The test above can fail: with overlap 2 (margin 0) zero-padded tile borders leak into the blend."""
    model = LocalVSR(num_frames=3, scale=2).eval()
    clip = seeded_rand((1, 3, 3, 20, 20), 0)
    with torch.no_grad():
        assert (forward_tiled(model, clip, 10, 2) - model(clip)).abs().max() > 1e-3


def test_tiled_blend_is_a_partition_of_unity():
    model = LocalVSR(num_frames=1, scale=4).eval()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.fill_(1.0)
        out = forward_tiled(model, torch.rand(1, 1, 3, 37, 23), tile=10, tile_overlap=6)
    torch.testing.assert_close(out, torch.ones_like(out))


def test_upscale_clip_with_tile_through_the_public_api():
    model = LocalVSR(num_frames=3, scale=2).eval()
    clip = seeded_rand((4, 3, 21, 18), 0)
    tiled = upscale_clip(model, clip, tile=8, tile_overlap=4)
    torch.testing.assert_close(tiled, upscale_clip(model, clip), atol=1e-4, rtol=0)


def test_frames_stream_lazily():
    """The iterator does not read the whole clip before the first output."""
    consumed = []

    def frames():
        for k in range(40):
            consumed.append(k)
            yield torch.full((3, 4, 4), k / 40)

    model = LocalVSR(num_frames=5, scale=2).eval()
    for i, _ in enumerate(upscale_frames(model, frames(), batch=2)):
        assert len(consumed) <= i + 5 + 2
    assert i == 39


def test_uint8_frames_and_batched_5d_clips():
    model = LocalVSR(num_frames=3, scale=2).eval()
    clip8 = torch.randint(0, 256, (2, 5, 3, 6, 6), dtype=torch.uint8)
    out = upscale_clip(model, clip8)
    assert out.shape == (2, 5, 3, 12, 12)
    torch.testing.assert_close(out[1], upscale_clip(model, clip8[1].float() / 255))


def test_half_precision_model_runs():
    model = LocalVSR(num_frames=3, scale=2).eval().to(torch.bfloat16)
    out = upscale_clip(model, seeded_rand((4, 3, 6, 6), 1))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_respects_a_models_own_tile_size():
    model = LocalVSR(num_frames=3, scale=2).eval()
    model.tile_size = 16
    with pytest.raises(ValueError, match="runs 16x16 tiles itself"):
        upscale_clip(model, torch.rand(3, 3, 40, 40), tile=8, tile_overlap=2)


def test_rejects_models_without_the_contract_and_wrong_outputs():
    with pytest.raises(ValueError, match="num_frames, scale and output_mode"):
        upscale_clip(torch.nn.Identity(), torch.rand(3, 3, 4, 4))
    model = LocalVSR(num_frames=3, scale=2)
    model.scale = 4
    with pytest.raises(ValueError, match=r"expected \(1, 3, 16, 16\)"):
        upscale_clip(model, torch.rand(3, 3, 4, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"batch": 0}, "batch"), ({"clip_stride": 0}, "clip_stride"), ({"tile": 4, "tile_overlap": 4}, "tile_overlap")],
)
def test_rejects_bad_arguments(kwargs, message):
    model = LocalVSR(num_frames=3, scale=2, output_mode="all")
    with pytest.raises(ValueError, match=message):
        upscale_clip(model, torch.rand(3, 3, 8, 8), **kwargs)


def test_rejects_frames_of_changing_size_and_empty_clips():
    model = LocalVSR(num_frames=3, scale=2)
    with pytest.raises(ValueError, match="first frame was"):
        list(upscale_frames(model, [torch.rand(3, 4, 4), torch.rand(3, 4, 5)]))
    with pytest.raises(ValueError, match="no frames"):
        upscale_clip(model, torch.rand(0, 3, 4, 4))
    assert list(upscale_frames(model, [])) == []


@pytest.mark.parametrize("name", reference_models.list_models())
def test_tiny_reference_models_run_on_short_and_tiled_clips(name):
    try:
        model = reference_models.create_model(name, "tiny").eval()
    except ImportError:
        pytest.skip(f"{name} is not written yet")
    torch.manual_seed(0)
    length = max(2, model.num_frames // 2)
    clip = torch.rand(length, 3, 12, 16)
    out = upscale_clip(model, clip)
    assert out.shape == (length, 3, 4 * 12, 4 * 16) and torch.isfinite(out).all()
    # Tiling is exact only for local models; the reference models attend globally, so only sanity here.
    tiled = upscale_clip(model, clip, tile=12, tile_overlap=4)
    assert tiled.shape == out.shape and torch.isfinite(tiled).all()


@given(
    length=st.integers(1, 9),
    mode=st.sampled_from(["center", "all"]),
    batch=st.integers(1, 3),
    skipped=st.sets(st.integers(0, 8)),
)
def test_skipped_frames_yield_none_and_leave_the_others_unchanged(length, mode, batch, skipped):
    """``skip`` (a resumed run) drops outputs, never changes the ones still computed."""
    model = FrameIndexVSR(3, mode)
    clip = fingerprint_clip(length)
    full = list(upscale_frames(model, clip.unbind(0), batch=batch))
    partial = list(upscale_frames(model, clip.unbind(0), batch=batch, skip=skipped))
    assert len(partial) == length
    for i, (a, b) in enumerate(zip(full, partial)):
        if i in skipped:
            assert b is None
        else:
            assert torch.equal(a, b)


def test_fully_skipped_windows_are_not_run():
    calls = []
    model = LocalVSR(num_frames=3, output_mode="all").eval()
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    clip = torch.rand(8, 3, 4, 4)
    assert sum(out is None for out in upscale_frames(model, clip.unbind(0), skip=range(8))) == 8
    assert calls == []
    list(upscale_frames(model, clip.unbind(0), skip=range(4)))
    assert 0 < len(calls) < len(clip_windows(8, 3))


def test_minimum_tile_of_the_reference_models():
    from reference_models.inference.upscale import minimum_tile

    sizes = {name: minimum_tile(reference_models.create_model(name, "tiny")) for name in ("mana", "mafnet", "vsrt")}
    assert sizes == {"mana": 1, "mafnet": 4, "vsrt": 4}
    model = LocalVSR().eval()
    with pytest.raises(ValueError, match="tile must be >= 4"):
        upscale_clip(
            reference_models.create_model("mafnet", "tiny").eval(), torch.rand(5, 3, 8, 8), tile=3, tile_overlap=0
        )
    assert minimum_tile(model) == 1
