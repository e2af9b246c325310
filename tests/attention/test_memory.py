"""MemoryAugmentedAttention and the MANA block (MANAAttention): official parity of every intermediate, an explicit
reference at any size, the shared query, the memory loss and its gradients, errors, compile, bf16."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.attention.test_gaussian_cross_frame import FIXTURE, dense_reference
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.official import load_official
from tests.strategies import batches, seeded_randn, seeds, sizes
from vsrblocks.attention.memory import MANAAttention, MemoryAugmentedAttention, memory_read


def reference_read(query: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit: s = softmax(Q M * Ci^-1/2) over slots, read = s M^T, loss = mean |Q - read|."""
    b, ci, h, w = query.shape
    q = query.reshape(b, ci, h * w).transpose(1, 2)
    read = torch.softmax(q @ bank * ci**-0.5, dim=-1) @ bank.t()
    return read.transpose(1, 2).reshape(b, ci, h, w), (q - read).abs().mean()


def official_mana_block(**kwargs) -> tuple[MANAAttention, dict]:
    data = load_official(FIXTURE)
    sd = data["state_dict"]
    block = MANAAttention(data["config"]["in_channels"], 7, memory_size=sd["nonloc_spatial.mb"].shape[1], **kwargs)
    own = {}
    for key, value in sd.items():
        if not key.startswith("nonloc_spatial.") or key == "nonloc_spatial.D":
            continue
        name = key[len("nonloc_spatial.") :]
        own[("memory." if name.split(".")[0] in ("mb", "W_z1") else "cross.") + name] = value
    block.load_state_dict(own, strict=True)
    return block.eval(), data


def _hook_all(block: MANAAttention) -> dict:
    caught = {}
    block.cross.W_z.register_forward_hook(lambda m, i, o: caught.update(nonloc_corr_prob=i[0], nonloc_W_y=o))
    block.memory.W_z1.register_forward_hook(lambda m, i, o: caught.update(nonloc_mem_read=i[0], nonloc_W_y1=o))
    return caught


# ----------------------------------------------------------------------------------------------- official parity


@pytest.mark.thread_counts
@pytest.mark.parametrize("chunk_size", [None, 13])
def test_mana_block_official_parity_every_intermediate(num_threads, chunk_size):
    block, data = official_mana_block(chunk_size=chunk_size)
    inter = data["intermediates"]
    caught = _hook_all(block)
    with torch.no_grad():
        z, qloss = block(inter["nonloc_in"])
    caught.update(nonloc_z=z, nonloc_qloss=qloss)
    for name in ("nonloc_corr_prob", "nonloc_W_y", "nonloc_mem_read", "nonloc_W_y1", "nonloc_z", "nonloc_qloss"):
        torch.testing.assert_close(caught[name], inter[name], atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(qloss, data["outputs"]["qloss"], atol=1e-5, rtol=0)
    # the documented composition, in the official order
    torch.testing.assert_close(
        z, inter["nonloc_W_y"] + inter["nonloc_in"][:, 3] + inter["nonloc_W_y1"], atol=1e-5, rtol=0
    )


def test_standalone_memory_block_official_parity():
    """The memory block alone on the centre frame (own GroupNorm + phi, loaded from the shared official ones)."""
    data = load_official(FIXTURE)
    sd, inter = data["state_dict"], data["intermediates"]
    block = MemoryAugmentedAttention(32, memory_size=sd["nonloc_spatial.mb"].shape[1])
    prefix = "nonloc_spatial."
    own = {
        k[len(prefix) :]: v
        for k, v in sd.items()
        if k.startswith(prefix) and k[len(prefix) :].split(".")[0] in ("norm", "phi", "mb", "W_z1")
    }
    block.load_state_dict(own, strict=True)
    with torch.no_grad():
        out, loss = block(inter["nonloc_in"][:, 3])
        read, loss2 = block.read(block.query(inter["nonloc_in"][:, 3]))
    torch.testing.assert_close(out, inter["nonloc_W_y1"], atol=1e-5, rtol=0)
    torch.testing.assert_close(read, inter["nonloc_mem_read"], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, inter["nonloc_qloss"], atol=1e-5, rtol=0)
    assert torch.equal(loss, loss2)


# ------------------------------------------------------------------------------------------ reference, any size


@given(batch=batches, ci=st.sampled_from([1, 4, 16]), slots=st.integers(1, 40), height=sizes, width=sizes, seed=seeds)
def test_memory_read_matches_reference(batch, ci, slots, height, width, seed):
    q = seeded_randn((batch, ci, height, width), seed)
    bank = seeded_randn((ci, slots), seed + 1)
    read, loss = memory_read(q, bank)
    ref_read, ref_loss = reference_read(q, bank)
    torch.testing.assert_close(read, ref_read, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)


@given(batch=batches, channels=st.sampled_from([2, 4, 8]), height=sizes, width=sizes, seed=seeds)
def test_mana_block_matches_dense_reference_any_size(batch, channels, height, width, seed):
    torch.manual_seed(seed)
    block = MANAAttention(channels, 5, memory_size=12, num_groups=2, init_sigma=1.7, zero_init=False, chunk_size=10)
    block = block.eval()
    clip = seeded_randn((batch, 5, channels, height, width), seed)
    with torch.no_grad():
        z, loss = block(clip)
        cross = block.cross
        normed = cross.norm(clip.flatten(0, 1))
        q = cross.phi(normed.unflatten(0, (batch, 5))[:, 2])
        keys = cross.theta(normed).unflatten(0, (batch, 5))
        values = cross.g(normed).unflatten(0, (batch, 5))
        read, ref_loss = reference_read(q, block.memory.mb)
        ref = cross.W_z(dense_reference(q, keys, values, cross.std)) + clip[:, 2] + block.memory.W_z1(read)
    assert z.shape == (batch, channels, height, width)
    torch.testing.assert_close(z, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- sharing, init, loss


def test_mana_block_shares_one_norm_and_query_projection():
    block = MANAAttention(8, 3, memory_size=16, num_groups=4)
    names = set(block.state_dict())
    assert {"cross.norm.weight", "cross.phi.weight", "cross.std", "memory.mb", "memory.W_z1.weight"} <= names
    assert not any(n.startswith(("memory.norm", "memory.phi")) for n in names)
    assert not hasattr(block.memory, "phi")
    calls = []
    block.cross.phi.register_forward_hook(lambda *a: calls.append(1))
    block(torch.randn(1, 3, 8, 4, 5))
    assert len(calls) == 1  # the query is computed once, for both attentions


def test_zero_init_is_identity_on_centre_frame():
    block = MANAAttention(8, 5, memory_size=16, num_groups=4)
    clip = torch.randn(2, 5, 8, 6, 7)
    z, loss = block(clip)
    assert torch.equal(z, clip[:, 2])
    assert loss.ndim == 0 and loss.item() > 0
    out, _ = MemoryAugmentedAttention(8, 16, num_groups=4)(clip[:, 0])
    assert torch.equal(out, torch.zeros_like(out))


def test_memory_loss_gradients_reach_bank_and_query():
    torch.manual_seed(0)
    block = MemoryAugmentedAttention(8, 16, num_groups=4)  # zero-init W_z1: only the loss drives phi and mb
    _, loss = block(torch.randn(2, 8, 5, 6))
    loss.backward()
    for name in ("mb", "phi.weight", "phi.bias", "norm.weight", "norm.bias"):
        grad = dict(block.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_project_query_false_takes_the_query():
    torch.manual_seed(0)
    shared = MemoryAugmentedAttention(8, 16, num_groups=4, zero_init=False)
    bare = MemoryAugmentedAttention(8, 16, project_query=False)
    bare.mb.data.copy_(shared.mb.data)
    bare.W_z1.load_state_dict(shared.W_z1.state_dict())
    x = torch.randn(2, 8, 5, 6)
    out, loss = shared(x)
    out2, loss2 = bare(shared.query(x))
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(loss, loss2)
    with pytest.raises(RuntimeError, match="project_query=False"):
        bare.query(x)


# ------------------------------------------------------------------------------------------- generic block checks


def test_batch_independent():
    torch.manual_seed(0)
    mem = MemoryAugmentedAttention(8, 16, num_groups=4, zero_init=False).eval()
    block = MANAAttention(8, 3, memory_size=16, num_groups=4, zero_init=False, chunk_size=9).eval()
    with torch.no_grad():
        assert_batch_independent(mem, torch.randn(3, 8, 5, 6))
        assert_batch_independent(block, torch.randn(3, 3, 8, 5, 6))


def test_errors():
    mem = MemoryAugmentedAttention(8, 16, num_groups=4)
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        mem(torch.randn(8, 5, 6))
    with pytest.raises(ValueError, match="C=8"):
        mem(torch.randn(1, 4, 5, 6))
    with pytest.raises(ValueError, match="C=4"):
        mem.read(torch.randn(1, 8, 5, 6))
    with pytest.raises(ValueError, match="memory_size"):
        MemoryAugmentedAttention(8, 0, num_groups=4)
    with pytest.raises(ValueError, match="num_groups"):
        MemoryAugmentedAttention(8, 16, num_groups=3)
    with pytest.raises(ValueError, match="memory"):
        memory_read(torch.randn(1, 4, 3, 3), torch.randn(5, 7))
    block = MANAAttention(8, 3, memory_size=16, num_groups=4)
    with pytest.raises(ValueError, match="T=3"):
        block(torch.randn(1, 5, 8, 4, 4))
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\)"):
        block(torch.randn(3, 8, 4, 4))


def test_compiles():
    torch.manual_seed(0)
    assert_compiles(MemoryAugmentedAttention(8, 16, num_groups=4, zero_init=False).eval(), torch.randn(2, 8, 5, 6))
    block = MANAAttention(8, 3, memory_size=16, num_groups=4, zero_init=False, chunk_size=15).eval()
    assert_compiles(block, torch.randn(2, 3, 8, 5, 6))


def test_bf16_finite():
    torch.manual_seed(0)
    with torch.no_grad():
        assert_half_precision_finite(
            MemoryAugmentedAttention(8, 16, num_groups=4, zero_init=False).eval(), torch.randn(2, 8, 5, 6)
        )
        block = MANAAttention(8, 3, memory_size=16, num_groups=4, zero_init=False, chunk_size=7).eval()
        z = assert_half_precision_finite(block, torch.randn(2, 3, 8, 5, 6))
        _, loss = block(torch.randn(2, 3, 8, 5, 6, dtype=torch.bfloat16))
    assert z.shape == (2, 8, 5, 6) and torch.isfinite(loss.float())


def test_extra_repr_shows_hyper_parameters():
    text = repr(MemoryAugmentedAttention(8, 24, inter_channels=6, num_groups=4))
    assert "channels=8" in text and "memory_size=24" in text and "inter_channels=6" in text
    text = repr(MANAAttention(8, 3, memory_size=16, num_groups=4))
    assert "num_frames=3" in text and "center_index=1" in text and "memory_size=16" in text


def test_empty_batch_gives_empty_output_and_zero_loss():
    block = MANAAttention(channels=8, num_frames=3, memory_size=16, num_groups=4, zero_init=False)
    clip = torch.randn(0, 3, 8, 5, 6, requires_grad=True)
    z, loss = block(clip)
    assert z.shape == (0, 8, 5, 6) and loss.item() == 0.0
    (z.sum() + loss).backward()
    assert clip.grad.shape == clip.shape
    out, loss = MemoryAugmentedAttention(channels=8, memory_size=16, num_groups=4)(torch.randn(0, 8, 5, 6))
    assert out.shape == (0, 8, 5, 6) and loss.item() == 0.0
