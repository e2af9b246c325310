"""MANA reference model: official parity (output, memory loss, every attention intermediate), conversion of official
checkpoints (D dropped and validated, 256-slot banks), any input size, registry, errors, gradients, compile, bf16."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_models
from reference_models.networks.mana import MANA, MODEL, PRESETS, from_official, official_key_map
from tests.checks import (
    assert_base_path_flip_consistent,
    assert_batch_independent,
    assert_compiles,
    assert_half_precision_finite,
)
from tests.official import MANA_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import seeded_rand, seeds


def _fixture() -> dict:
    return load_official(FIXTURE)


def _tiny(seed=0, **overrides) -> MANA:
    torch.manual_seed(seed)
    return MANA(**{**PRESETS["tiny"], **overrides})


# ----------------------------------------------------------------------------------------------- official parity


@pytest.mark.thread_counts
@pytest.mark.parametrize("chunk_size", [None, 10])
def test_official_parity_output_qloss_and_intermediates(num_threads, chunk_size):
    data = _fixture()
    model = from_official(data["state_dict"], **data["config"])
    model.attention.cross.chunk_size = chunk_size
    caught = {}
    att = model.attention
    att.register_forward_hook(lambda m, i, o: caught.update(nonloc_in=i[0], nonloc_z=o[0], nonloc_qloss=o[1]))
    att.cross.W_z.register_forward_hook(lambda m, i, o: caught.update(nonloc_corr_prob=i[0], nonloc_W_y=o))
    att.memory.W_z1.register_forward_hook(lambda m, i, o: caught.update(nonloc_mem_read=i[0], nonloc_W_y1=o))
    with torch.no_grad():
        out = model(data["inputs"]["x"])
    assert out.shape == data["outputs"]["out"].shape
    torch.testing.assert_close(out, data["outputs"]["out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.last_memory_loss, data["outputs"]["qloss"], atol=1e-5, rtol=0)
    for name, ref in data["intermediates"].items():
        torch.testing.assert_close(caught[name], ref, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_registry_from_official_and_model_attributes():
    data = _fixture()
    model = reference_models.from_official("mana", data["state_dict"], **data["config"])
    assert not model.training
    assert (model.num_frames, model.scale, model.output_mode) == (7, 4, "center")
    assert "nonloc_spatial.D" not in model.state_dict() and not any(k.endswith(".D") for k in model.state_dict())
    assert model.attention.memory.mb.shape == (16, 256)  # slots read from the checkpoint
    with torch.no_grad():
        torch.testing.assert_close(model(data["inputs"]["x"]), data["outputs"]["out"], atol=1e-5, rtol=0)


def test_official_weights_run_at_other_sizes():
    """The official model only runs at its config size; ours runs the same weights at any size."""
    data = _fixture()
    model = from_official(data["state_dict"], **data["config"])
    with torch.no_grad():
        for h, w in [(9, 13), (20, 7)]:
            out = model(seeded_rand((1, 7, 3, h, w), h * w))
            assert out.shape == (1, 3, 4 * h, 4 * w) and torch.isfinite(out).all()


def test_from_official_validates_D_and_keys():
    data = _fixture()
    sd, cfg = dict(data["state_dict"]), data["config"]
    with pytest.raises(ValueError, match="nonloc_spatial.D has shape"):
        from_official(sd, **{**cfg, "width": 15})
    bad = dict(sd)
    bad["nonloc_spatial.D"] = sd["nonloc_spatial.D"] * 2
    with pytest.raises(ValueError, match="squared-distance"):
        from_official(bad, **cfg)
    transposed = dict(sd)  # same shape for a 16x12 frame, wrong geometry
    with pytest.raises(ValueError):
        from_official(transposed, **{**cfg, "width": 12, "height": 16})
    missing = {k: v for k, v in sd.items() if k != "conv_last.bias"}
    with pytest.raises(ValueError, match="conv_last.bias"):
        from_official(missing, **cfg)
    with pytest.raises(ValueError, match="shape"):
        from_official(sd, **{**cfg, "in_channels": 64})
    with pytest.raises(ValueError, match="unknown official MANA key"):
        from_official({**sd, "nonloc_spatial.extra": torch.zeros(1)}, **cfg)
    no_d = {k: v for k, v in sd.items() if k != "nonloc_spatial.D"}  # D is geometry only: optional
    with torch.no_grad():
        out = from_official(no_d, **cfg)(data["inputs"]["x"])
    torch.testing.assert_close(out, data["outputs"]["out"], atol=1e-5, rtol=0)


def test_from_official_channels_64_and_512_slots():
    """A synthetic official-layout checkpoint with C = 64 (two channels per GroupNorm group) round-trips."""
    torch.manual_seed(0)
    src = MANA(channels=64, encoder_blocks=1, decoder_blocks=1, memory_size=512, zero_init=False)
    inverse = {
        official_key_map(k): k
        for k in [
            "nonloc_spatial." + n + s
            for n in ("norm", "g", "theta", "phi", "W_z", "W_z1")
            for s in (".weight", ".bias")
        ]
        + ["nonloc_spatial.std", "nonloc_spatial.mb"]
    }
    official = {inverse.get(k, k): v for k, v in src.state_dict().items()}
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(5), indexing="ij")
    pos = torch.stack((xs.flatten(), ys.flatten()), 1).float()
    official["nonloc_spatial.D"] = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    model = from_official(official, in_channels=64, encoder_nblocks=1, decoder_nblocks=1, width=5, height=6)
    x = torch.rand(1, 7, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.eval()(x), atol=0, rtol=0)
    assert model.attention.memory.mb.shape == (32, 512)


# ------------------------------------------------------------------------------------------------ any size, registry


def test_registry_tiny():
    model = reference_models.create_model("mana", "tiny").eval()
    assert isinstance(model, MODEL)
    assert reference_models.model_spec(model)["name"] == "mana"
    assert set(reference_models.list_presets("mana")) >= {"paper", "tiny"}
    with torch.no_grad():
        assert model(torch.rand(1, 7, 3, 20, 24)).shape == (1, 3, 80, 96)


def test_paper_preset_topology():
    model = reference_models.create_model("mana", "paper")
    assert model.channels == 128 and len(model.encoder) == 5 and len(model.decoder) == 40
    assert model.attention.memory.mb.shape == (64, 512)
    assert model.upconv2.out_channels == 256 and model.conv_hr.in_channels == 64
    assert (model.num_frames, model.scale, model.output_mode) == (7, 4, "center")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 14.3  # paper: ~14.3 M at C = 128


@settings(max_examples=5)
@given(height=st.integers(3, 14), width=st.integers(3, 14), seed=seeds)
def test_any_size_odd_included(height, width, seed):
    model = _tiny(seed).eval()
    with torch.no_grad():
        out = model(seeded_rand((1, 7, 3, height, width), seed))
    assert out.shape == (1, 3, 4 * height, 4 * width) and torch.isfinite(out).all()
    assert model.last_memory_loss.ndim == 0


def test_zero_init_fresh_model_is_bilinear_plus_head_of_centre():
    """With zero-initialised W_z/W_z1 the attention block passes the centre features through: the other frames
    cannot change the output of a fresh model."""
    model = _tiny().eval()
    x = torch.rand(1, 7, 3, 8, 9)
    y = x.clone()
    y[:, [0, 1, 2, 4, 5, 6]] = torch.rand(1, 6, 3, 8, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(y), atol=0, rtol=0)


@settings(max_examples=2)
@given(batch=st.integers(2, 3), height=st.integers(3, 8), width=st.integers(3, 8), seed=seeds)
def test_batch_independent(batch, height, width, seed):
    model = _tiny(seed % 100, zero_init=False).eval()
    with torch.no_grad():
        assert_batch_independent(model, seeded_rand((batch, 7, 3, height, width), seed))


@settings(max_examples=4)
@given(height=st.integers(3, 12), width=st.integers(3, 12), seed=seeds)
def test_bilinear_base_path_commutes_with_horizontal_flip(height, width, seed):
    """With the learned head silenced (``conv_last = 0``) the output is the bilinear x4 base of the centre frame,
    which commutes with a horizontal flip."""
    assert_base_path_flip_consistent(_tiny(seed % 100).eval(), seeded_rand((1, 7, 3, height, width), seed), "bilinear")


def test_errors():
    model = _tiny()
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\)"):
        model(torch.rand(7, 3, 8, 8))
    with pytest.raises(ValueError, match="C=3"):
        model(torch.rand(1, 7, 1, 8, 8))
    with pytest.raises(ValueError, match="T=7"):
        model(torch.rand(1, 5, 3, 8, 8))
    with pytest.raises(ValueError, match="num_groups"):
        MANA(channels=24, encoder_blocks=1, decoder_blocks=1)
    with pytest.raises(ValueError, match="unknown preset"):
        reference_models.create_model("mana", "huge")


# --------------------------------------------------------------------------------------- gradients, compile, bf16


@pytest.mark.parametrize("zero_init", [True, False])
def test_finite_gradients_for_every_parameter(zero_init):
    model = _tiny(zero_init=zero_init).train()
    x = torch.rand(2, 7, 3, 8, 9)
    out = model(x)
    loss = (out - x[:, 3].repeat_interleave(4, -1).repeat_interleave(4, -2)).abs().mean() + 0.1 * model.last_memory_loss
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if not zero_init:  # every path is live: every parameter receives a gradient
            assert param.grad.abs().sum() > 0, name


def test_memory_loss_is_kept_without_changing_the_return():
    model = _tiny()
    assert model.last_memory_loss is None
    out = model(torch.rand(1, 7, 3, 5, 6))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 20, 24)
    assert model.last_memory_loss.requires_grad and model.last_memory_loss.ndim == 0


def test_compiles():
    model = _tiny(zero_init=False, encoder_blocks=1, decoder_blocks=1).eval()
    assert_compiles(model, torch.rand(1, 7, 3, 5, 6))


def test_bf16_finite():
    model = _tiny(zero_init=False).eval()
    with torch.no_grad():
        out = assert_half_precision_finite(model, torch.rand(1, 7, 3, 6, 7))
    assert out.shape == (1, 3, 24, 28)
    assert torch.isfinite(model.last_memory_loss.float())
