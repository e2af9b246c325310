"""BidirectionalPropagation and SecondOrderGridPropagation: the sweeps against loops written out the way
BasicSR writes them (whole lists of features), streaming through a store (what is put, read, discarded),
lazy frame sources, extra cell inputs, batch independence, any size and length, shape errors, compile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.checks import assert_batch_independent, assert_compiles
from tests.strategies import batches, seeded_rand, seeds, sizes
from vsrblocks.align import SecondOrderDeformableAlignment, flow_warp
from vsrblocks.recurrent import (
    BidirectionalPropagation,
    ConcatCell,
    FeatureStore,
    FrameSource,
    SecondOrderGridPropagation,
)

C = 4
GRID = ("backward_1", "forward_1", "backward_2", "forward_2")


class Flow(nn.Module):
    """A small learned flow of a few pixels (non-zero, different per pixel and per pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(self.conv(torch.cat((ref, supp), dim=1)))


class Align(nn.Module):
    """Uses every argument, so a wrong feature, flow or composition changes the result."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3 * C + 4, C, 3, padding=1)

    def forward(self, feat_1, feat_2, current, flow_1, flow_2):
        warped = (flow_warp(feat_1, flow_1), current, flow_warp(feat_2, flow_2), flow_1, flow_2)
        return self.conv(torch.cat(warped, dim=1))


def cell(in_channels: int) -> ConcatCell:
    return ConcatCell(nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1), nn.LeakyReLU(0.1)))


def bidirectional(seed: int = 0, **kwargs) -> BidirectionalPropagation:
    torch.manual_seed(seed)
    extra = C if kwargs.get("forward_sees_backward") else 0
    return BidirectionalPropagation(C, cell(3 + C), cell(3 + extra + C), Flow(), **kwargs)


def grid(seed: int = 0, branches=GRID) -> SecondOrderGridPropagation:
    torch.manual_seed(seed)
    return SecondOrderGridPropagation(
        C,
        nn.Conv2d(3, C, 3, padding=1),
        {b: Align() for b in branches},
        {b: cell((k + 2) * C) for k, b in enumerate(branches)},
        Flow(),
        branches=branches,
    )


def bidirectional_loop(prop: BidirectionalPropagation, clip: torch.Tensor) -> torch.Tensor:
    """BasicVSR's loops: all flows first, then the backward list, then the forward sweep."""
    b, t, _, h, w = clip.shape
    flows_backward = [prop.flow(clip[:, i], clip[:, i + 1]) for i in range(t - 1)]
    flows_forward = [prop.flow(clip[:, i + 1], clip[:, i]) for i in range(t - 1)]
    backward, feat = [None] * t, clip.new_zeros(b, C, h, w)
    for i in range(t - 1, -1, -1):
        if i < t - 1:
            feat = flow_warp(feat, flows_backward[i])
        feat = prop.backward_cell(clip[:, i], feat)
        backward[i] = feat
    out, feat = [], torch.zeros_like(feat)
    for i in range(t):
        if i > 0:
            feat = flow_warp(feat, flows_forward[i - 1])
        feat = prop.forward_cell(clip[:, i], feat)
        out.append(torch.cat((backward[i], feat), dim=1))
    return torch.stack(out, dim=1)


def grid_loop(prop: SecondOrderGridPropagation, clip: torch.Tensor) -> torch.Tensor:
    """BasicVSR++'s loops over whole lists of features."""
    t = clip.shape[1]
    flows = {
        "backward": [prop.flow(clip[:, i], clip[:, i + 1]) for i in range(t - 1)],
        "forward": [prop.flow(clip[:, i + 1], clip[:, i]) for i in range(t - 1)],
    }
    feats = {"spatial": [prop.extractor(clip[:, i]) for i in range(t)]}
    for name in prop.branches:
        direction = name.split("_")[0]
        order = list(range(t))[::-1] if direction == "backward" else list(range(t))
        flow_index = order if direction == "backward" else [i - 1 for i in order]
        outputs, prop_feat = [], torch.zeros_like(feats["spatial"][0])
        for step, idx in enumerate(order):
            current = feats["spatial"][idx]
            if step > 0:
                flow_1 = flows[direction][flow_index[step]]
                feat_2, flow_2 = torch.zeros_like(prop_feat), torch.zeros_like(flow_1)
                if step > 1:
                    feat_2 = outputs[-2]
                    flow_2 = flow_1 + flow_warp(flows[direction][flow_index[step - 1]], flow_1)
                prop_feat = prop.align[name](prop_feat, feat_2, current, flow_1, flow_2)
            earlier = [feats[k][idx] for k in feats if k != "spatial"]
            prop_feat = prop_feat + prop.cells[name](current, *earlier, prop_feat)
            outputs.append(prop_feat)
        feats[name] = outputs[::-1] if direction == "backward" else outputs
    return torch.stack([torch.cat([feats[k][i] for k in feats], dim=1) for i in range(t)], dim=1)


class RecordingStore(FeatureStore):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str, int]] = []
        self.peak = 0

    def put(self, key, index, value):
        super().put(key, index, value)
        self.log.append(("put", key, index))
        self.peak = max(self.peak, len(self))

    def get(self, key, index):
        self.log.append(("get", key, index))
        return super().get(key, index)

    def discard(self, key, index):
        self.log.append(("discard", key, index))
        super().discard(key, index)


class CountingFrames:
    """A lazy frame source that counts its reads."""

    def __init__(self, clip: torch.Tensor) -> None:
        self.clip, self.reads = clip, [0] * clip.shape[1]

    def __len__(self) -> int:
        return self.clip.shape[1]

    def __getitem__(self, i: int) -> torch.Tensor:
        self.reads[i] += 1
        return self.clip[:, i]


@given(b=batches, t=st.integers(1, 4), h=sizes, w=sizes, seed=seeds)
@settings(max_examples=6)
def test_bidirectional_is_basicvsrs_loop(b, t, h, w, seed):
    prop = bidirectional(seed % 7)
    clip = seeded_rand((b, t, 3, h, w), seed)
    with torch.no_grad():
        out = prop(clip)
        assert out.shape == (b, t, 2 * C, h, w)
        torch.testing.assert_close(out, bidirectional_loop(prop, clip), atol=1e-6, rtol=0)


@given(b=batches, t=st.integers(1, 4), h=sizes, w=sizes, seed=seeds)
@settings(max_examples=6)
def test_grid_is_basicvsrpps_loop(b, t, h, w, seed):
    prop = grid(seed % 7)
    clip = seeded_rand((b, t, 3, h, w), seed)
    with torch.no_grad():
        out = prop(clip)
        assert out.shape == (b, t, 5 * C, h, w)
        torch.testing.assert_close(out, grid_loop(prop, clip), atol=1e-6, rtol=0)


def test_bidirectional_store_holds_backward_features_until_read_and_empties():
    prop, clip, store = bidirectional(), seeded_rand((1, 5, 3, 6, 7), 0), RecordingStore()
    emitted: list[int] = []
    with torch.no_grad():
        prop.stream(clip.unbind(1), emit=lambda i, f: emitted.append(i), store=store)
    assert emitted == list(range(5)) and len(store) == 0
    assert [e for e in store.log if e[0] == "put"] == [("put", "backward", i) for i in range(4, -1, -1)]
    # each backward feature is discarded right after its frame is emitted
    assert [e for e in store.log if e[0] == "discard"] == [("discard", "backward", i) for i in range(5)]


def test_grid_store_discards_as_early_as_possible():
    prop, clip, store = grid(), seeded_rand((1, 4, 3, 6, 7), 0), RecordingStore()
    emitted: list[int] = []
    with torch.no_grad():
        prop.stream(clip.unbind(1), emit=lambda i, f: emitted.append(i), store=store)
    assert emitted == [0, 1, 2, 3] and len(store) == 0
    puts = {(k, i) for op, k, i in store.log if op == "put"}
    # the last branch goes straight to emit; flows are kept for the second sweep of their direction only
    assert puts == {(k, i) for k in ("spatial", "backward_1", "forward_1", "backward_2") for i in range(4)} | {
        (k, i) for k in ("flows_backward", "flows_forward") for i in range(3)
    }
    gets = [(k, i) for op, k, i in store.log if op == "get"]
    assert gets.count(("flows_backward", 0)) == 1 and gets.count(("spatial", 2)) == 3
    discarded_flows = [e for e in store.log if e[0] == "discard" and e[1] == "flows_backward"]
    first_forward_2 = store.log.index(("get", "spatial", 0), store.log.index(("put", "backward_2", 0)))
    assert all(store.log.index(e) < first_forward_2 for e in discarded_flows)  # gone before the last sweep


def test_stream_with_a_store_equals_forward_and_frames_are_read_lazily():
    clip = seeded_rand((2, 4, 3, 9, 8), 3)
    for prop in (bidirectional(1), grid(1)):
        frames = CountingFrames(clip)
        out: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            prop.stream(
                frames,
                emit=lambda i, f, out=out: out.__setitem__(i, torch.cat(list(f.values()), 1)),
                store=RecordingStore(),
            )
            expected = prop(clip)
        assert isinstance(frames, FrameSource)
        torch.testing.assert_close(torch.stack([out[i] for i in range(4)], 1), expected, atol=0, rtol=0)
        # once per sweep that needs frames (the grid's later sweeps read features only), and frame 0 for its size
        assert frames.reads == [3, 2, 2, 2]


def test_cell_inputs_and_backward_features_reach_the_cells():
    """IconVSR's use: keyframe features refilled into both cells, the backward features into the forward cell."""
    seen: list[tuple[str, int, tuple[int, ...], bool]] = []

    class Cell(nn.Module):
        def __init__(self, name, in_channels):
            super().__init__()
            self.name, self.conv = name, nn.Conv2d(in_channels, C, 3, padding=1)

        def forward(self, frame, *rest, refill=None):
            seen.append((self.name, len(rest), tuple(rest[-1].shape), refill is not None))
            propagated = rest[-1] if refill is None else rest[-1] + refill
            return self.conv(torch.cat((frame, *rest[:-1], propagated), 1))

    torch.manual_seed(0)
    prop = BidirectionalPropagation(
        C, Cell("backward", 3 + C), Cell("forward", 3 + 2 * C), Flow(), forward_sees_backward=True
    )
    clip = seeded_rand((1, 5, 3, 6, 6), 1)
    keyframes = {0, 4}

    def refill(branch, i):
        return {"refill": torch.ones(1, C, 6, 6)} if i in keyframes else {}

    with torch.no_grad():
        prop.stream(clip, emit=lambda i, f: None, cell_inputs=refill)
    assert [s[:2] for s in seen] == [("backward", 1)] * 5 + [("forward", 2)] * 5
    assert [s[3] for s in seen] == [True, False, False, False, True] * 2


def test_batch_independent():
    clip = seeded_rand((3, 3, 3, 7, 9), 2)
    with torch.no_grad():
        assert_batch_independent(bidirectional(), clip, atol=1e-6)
        assert_batch_independent(grid(), clip, atol=1e-6)


@pytest.mark.parametrize("make", [bidirectional, grid])
def test_shape_errors_name_the_frame(make):
    prop = make()
    with pytest.raises(
        ValueError, match=r"frames\[2\]: expected \(B, C, H, W\) with B=1, C=3, H=6, W=7, got \(1, 3, 6, 8\)"
    ):
        prop.stream([torch.rand(1, 3, 6, 7)] * 2 + [torch.rand(1, 3, 6, 8)], emit=lambda i, f: None)
    with pytest.raises(ValueError, match="at least one frame"):
        prop.stream([], emit=lambda i, f: None)
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\)"):
        prop(torch.rand(3, 6, 7))


def test_constructor_and_cell_errors():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="one module for each"):
        SecondOrderGridPropagation(
            C,
            nn.Identity(),
            {"backward_1": Align()},
            {"backward_1": cell(2 * C)},
            Flow(),
            branches=("backward_1", "forward_1"),
        )
    with pytest.raises(ValueError, match="start with 'backward' or 'forward'"):
        SecondOrderGridPropagation(C, nn.Identity(), {"up": Align()}, {"up": cell(2 * C)}, Flow(), branches=("up",))
    wrong = BidirectionalPropagation(C, cell(3 + C), ConcatCell(nn.Conv2d(3 + C, C + 1, 1)), Flow())
    with pytest.raises(ValueError, match=r"forward cell output: expected \(B, C, H, W\) with C=4"):
        wrong(torch.rand(1, 2, 3, 5, 5))


def test_feature_store_errors_name_the_entry():
    store = FeatureStore()
    store.put("spatial", 1, torch.zeros(1))
    store.discard("spatial", 1)
    store.discard("spatial", 1)  # discarding twice is harmless
    with pytest.raises(KeyError, match="'spatial' at frame 1"):
        store.get("spatial", 1)
    store.put("a", 0, torch.zeros(1))
    store.clear()
    assert len(store) == 0


def test_compiles():
    """A grid branch with BasicVSR++'s alignment, second-order path included (T = 3); tiny BasicVSR's test
    compiles the bidirectional block."""
    branches = ("backward_1",)
    prop = grid(branches=branches)
    prop.align = nn.ModuleDict({b: SecondOrderDeformableAlignment(C, deform_groups=2) for b in branches})
    with torch.no_grad():
        assert_compiles(prop, seeded_rand((1, 3, 3, 6, 7), 0), atol=1e-5)
