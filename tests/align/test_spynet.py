"""SPyNet: any frame size, both checkpoint layouts, clear load errors, and parity with the official VSRT flows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.official import VSRT_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import seeded_rand, seeds
from vsrblocks.align import SPyNet, bidirectional_flows
from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.checkpoint import CheckpointError


def _spynet(seed: int = 0) -> SPyNet:
    torch.manual_seed(seed)
    return SPyNet().eval()


def _to_basicsr(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMagic ``...basic_module.{j}.conv.weight`` -> BasicSR ``...basic_module.{2j}.weight``."""
    out = {}
    for key, value in state_dict.items():
        head, index, _, kind = key.rsplit(".", 3)
        out[f"{head}.{2 * int(index)}.{kind}"] = value
    return out


@pytest.fixture(scope="module")
def official():
    return load_official(FIXTURE)


@pytest.fixture(scope="module")
def spynet_module() -> SPyNet:
    return _spynet()


@given(height=st.integers(1, 70), width=st.integers(1, 70), batch=st.integers(1, 2), seed=seeds)
def test_any_size_gives_same_size_flow(spynet_module, height, width, batch, seed):
    ref = seeded_rand((batch, 3, height, width), seed)
    supp = seeded_rand((batch, 3, height, width), seed + 1)
    with torch.no_grad():
        flow = spynet_module(ref, supp)
    assert flow.shape == (batch, 2, height, width)
    assert torch.isfinite(flow).all()


def test_odd_size_matches_resize_rescale_definition(spynet_module):
    """23x37 runs at 32x64 and is brought back: bilinear resize of the flow, x scaled by 37/64, y by 23/32."""
    ref, supp = seeded_rand((1, 3, 23, 37), 1), seeded_rand((1, 3, 23, 37), 2)
    up = dict(size=(32, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        big = spynet_module(torch.nn.functional.interpolate(ref, **up), torch.nn.functional.interpolate(supp, **up))
        expected = torch.nn.functional.interpolate(big, size=(23, 37), mode="bilinear", align_corners=False)
        expected = expected * torch.tensor([37 / 64, 23 / 32]).view(1, 2, 1, 1)
        torch.testing.assert_close(spynet_module(ref, supp), expected, atol=1e-6, rtol=0)


def test_identical_pair_is_not_short_circuited(official):
    """An untrained SPyNet gives a non-zero self-flow, and the official code uses that value."""
    spynet = SPyNet()
    spynet.load_state_dict(SPyNet.convert_state_dict(official["state_dict"], prefix="spynet.spynet."))
    x = official["inputs"]["x"][:, 0]
    with torch.no_grad():
        assert spynet(x, x).abs().mean() > 0.1


def test_batch_independent_and_shape_errors(spynet_module):
    ref, supp = seeded_rand((3, 3, 16, 20), 5), seeded_rand((3, 3, 16, 20), 6)
    with torch.no_grad():
        assert_batch_independent(spynet_module, ref, supp)
    with pytest.raises(ValueError, match=r"ref: expected \(B, C, H, W\) with C=3"):
        spynet_module(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="supp"):
        spynet_module(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_flow_direction_convention():
    """ref(p) = supp(p + flow(p)): warping supp by the ref->supp flow (border padding) reproduces ref."""
    ref = seeded_rand((1, 3, 8, 16), 3)
    supp = torch.roll(ref, shifts=-2, dims=-1)  # supp(x) = ref(x + 2), so ref(x) = supp(x - 2)
    flow = torch.zeros(1, 2, 8, 16)
    flow[:, 0] = -2.0
    torch.testing.assert_close(flow_warp(supp, flow, padding_mode="border")[..., 2:], ref[..., 2:])


def test_fixture_flow_parity(official):
    # at the other thread count too: test_vsrt.py checks the same recorded flows
    spynet = SPyNet()
    spynet.load_state_dict(
        SPyNet.convert_state_dict(official["state_dict"], prefix=SPyNet.find_prefix(official["state_dict"]))
    )
    with torch.no_grad():
        flows_forward, flows_backward = bidirectional_flows(spynet, official["inputs"]["x"])
    torch.testing.assert_close(flows_forward, official["intermediates"]["flows_forward"], atol=1e-5, rtol=0)
    torch.testing.assert_close(flows_backward, official["intermediates"]["flows_backward"], atol=1e-5, rtol=0)


def test_bidirectional_flows_edges(spynet_module):
    clip = seeded_rand((2, 4, 3, 16, 24), 7)
    with torch.no_grad():
        flows_forward, flows_backward = bidirectional_flows(spynet_module, clip)
        assert flows_forward.shape == flows_backward.shape == (2, 4, 2, 16, 24)
        for i in range(4):
            nxt, prv = min(i + 1, 3), max(i - 1, 0)
            torch.testing.assert_close(flows_backward[:, i], spynet_module(clip[:, i], clip[:, nxt]), atol=1e-5, rtol=0)
            torch.testing.assert_close(flows_forward[:, i], spynet_module(clip[:, i], clip[:, prv]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="clip"):
        bidirectional_flows(spynet_module, torch.rand(1, 3, 16, 24))


class _CountingSpyNet(torch.nn.Module):
    def __init__(self, spynet: SPyNet) -> None:
        super().__init__()
        self.spynet = spynet
        self.batch_sizes: list[int] = []

    def forward(self, ref, supp):
        self.batch_sizes.append(ref.shape[0])
        return self.spynet(ref, supp)


def test_bidirectional_flows_is_one_batched_call(spynet_module):
    counting = _CountingSpyNet(spynet_module)
    with torch.no_grad():
        bidirectional_flows(counting, seeded_rand((2, 3, 3, 8, 8), 9))
    assert counting.batch_sizes == [2 * 2 * 3]


def test_single_frame_clip_uses_self_flow(spynet_module):
    clip = seeded_rand((1, 1, 3, 12, 12), 8)
    with torch.no_grad():
        flows_forward, flows_backward = bidirectional_flows(spynet_module, clip)
        torch.testing.assert_close(flows_forward, flows_backward)


def test_both_key_layouts_load():
    source = _spynet(1)
    mmagic = source.state_dict()
    assert all(".conv." in key for key in mmagic)
    ref, supp = seeded_rand((1, 3, 32, 32), 1), seeded_rand((1, 3, 32, 32), 2)
    with torch.no_grad():
        expected = source(ref, supp)
    basicsr = _to_basicsr(mmagic)
    norm = {
        "mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        "std": torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    }
    variants = {
        "mmagic": mmagic,
        "mmagic+norm": {**mmagic, **norm},
        "basicsr": basicsr,
        "basicsr params": {"params": {**basicsr, **norm}},
    }
    for name, state_dict in variants.items():
        target = _spynet(2)
        target.load_state_dict(state_dict)
        with torch.no_grad():
            torch.testing.assert_close(target(ref, supp), expected, atol=0, rtol=0, msg=name)


def test_nested_load_accepts_basicsr_and_official_keys():
    """A parent module's own load_state_dict can pass either layout (and mean/std) through."""
    source = _spynet(3).state_dict()
    parent = torch.nn.Module()
    parent.spynet = SPyNet()
    norm = {
        "spynet.mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        "spynet.std": torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    }
    parent.load_state_dict({**{f"spynet.{k}": v for k, v in _to_basicsr(source).items()}, **norm})
    for key, value in source.items():
        torch.testing.assert_close(parent.spynet.state_dict()[key], value)
    bad = {**{f"spynet.{k}": v for k, v in source.items()}, "spynet.mean": torch.zeros(1, 3, 1, 1)}
    with pytest.raises(RuntimeError, match="spynet.mean"):
        parent.load_state_dict(bad)


def test_wrong_file_raises_checkpoint_error_naming_keys(tmp_path):
    other = torch.nn.Conv2d(3, 8, 3).state_dict()
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: basic_module\.0\.basic_module\.0\.conv\.bias.*unexpected keys: bias, weight",
    ):
        SPyNet().load_state_dict(other)
    truncated = {k: v for k, v in _spynet().state_dict().items() if not k.startswith("basic_module.5.")}
    with pytest.raises(CheckpointError, match=r"missing keys: basic_module\.5\."):
        SPyNet().load_state_dict(truncated)
    path = tmp_path / "not_spynet.pth"
    torch.save({"params": other}, path)
    with pytest.raises(CheckpointError, match="not_spynet.pth.*missing keys"):
        SPyNet.from_checkpoint(path)
    two = {
        f"{name}.spynet.{k}": v for name in ("generator", "generator_ema") for k, v in _spynet().state_dict().items()
    }
    torch.save({"state_dict": two}, tmp_path / "two.pth")
    with pytest.raises(CheckpointError, match="two.pth.*'generator.spynet.', 'generator_ema.spynet.'.*prefix="):
        SPyNet.from_checkpoint(tmp_path / "two.pth")
    assert isinstance(SPyNet.from_checkpoint(tmp_path / "two.pth", prefix="generator_ema.spynet."), SPyNet)
    with pytest.raises(CheckpointError, match="does not exist"):
        SPyNet.from_checkpoint(tmp_path / "absent.pth")


_unpickled: list[str] = []


def _record_unpickling() -> dict:
    _unpickled.append("code ran")
    return {}


class _Payload:
    """Unpickling this runs ``_record_unpickling``: only a full (unsafe) ``torch.load`` would do that."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_from_checkpoint_reads_with_weights_only(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"params": _spynet().state_dict(), "meta": _Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled.pth"):
        SPyNet.from_checkpoint(path)
    assert not _unpickled


def test_from_checkpoint_files(tmp_path):
    source = _spynet(4)
    ref, supp = seeded_rand((1, 3, 20, 28), 1), seeded_rand((1, 3, 20, 28), 2)
    with torch.no_grad():
        expected = source(ref, supp)
    files = {
        "mmagic.pth": {"state_dict": source.state_dict()},
        "basicsr.pth": {"params": _to_basicsr(source.state_dict())},
        "vsrt.pth": {
            **{f"spynet.spynet.{k}": v for k, v in source.state_dict().items()},
            "conv_first.weight": torch.zeros(1),
        },
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        loaded = SPyNet.from_checkpoint(tmp_path / name)
        assert not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(ref, supp), expected, atol=0, rtol=0, msg=name)


def test_gradients_bf16_and_compile(spynet_module):
    ref, supp = seeded_rand((1, 3, 32, 32), 1), seeded_rand((1, 3, 32, 32), 2)
    spynet = _spynet(5)
    ref.requires_grad_(True)
    spynet(ref, supp).square().mean().backward()
    assert ref.grad is not None and torch.isfinite(ref.grad).all()
    assert all(p.grad is not None for p in spynet.parameters())
    with torch.no_grad():
        # random SPyNet weights give flows of tens of pixels; compiled conv order differs in the last bits
        assert_compiles(_spynet(5), ref.detach(), supp, atol=1e-4)
        assert_half_precision_finite(_spynet(5), ref.detach(), supp)


def test_from_checkpoint_builds_the_stored_widths(tmp_path):
    """A narrow SPyNet (e.g. VSRT tiny's) loads as itself; asking for other widths names the mismatch."""
    torch.manual_seed(6)
    narrow = SPyNet((8, 16, 8, 4)).eval()
    ref, supp = seeded_rand((1, 3, 20, 28), 1), seeded_rand((1, 3, 20, 28), 2)
    for name, state_dict in (("mmagic.pth", narrow.state_dict()), ("basicsr.pth", _to_basicsr(narrow.state_dict()))):
        torch.save({"params": state_dict}, tmp_path / name)
        loaded = SPyNet.from_checkpoint(tmp_path / name)
        assert loaded.hidden_channels == (8, 16, 8, 4)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ref, supp), narrow(ref, supp), atol=0, rtol=0, msg=name)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches: basic_module\.0\.basic_module\.0\.conv\.bias: \(8,\) vs expected \(32,\)",
    ):
        SPyNet.from_checkpoint(tmp_path / "mmagic.pth", hidden_channels=(32, 64, 32, 16))
