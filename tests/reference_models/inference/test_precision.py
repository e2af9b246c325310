"""Mixed precision: the choice of ``auto``, the float32 islands, and the accuracy of bfloat16 outputs."""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import reference_models
from reference_models.inference.hardware import cpu_flags, describe_cpu
from reference_models.inference.precision import (
    compute_dtype,
    float32_islands,
    low_precision_weights,
    mixed_precision,
    resolve_precision,
)
from reference_models.inference.upscale import upscale_clip
from tests.reference_models.conftest import play_cpu
from tests.reference_models.helpers import image_like_clip, scale_last_conv

MODELS = reference_models.list_models()


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return reference_models.create_model(name, "tiny").eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / (a.double() - b.double()).pow(2).mean().item())


class DtypeLog(TorchDispatchMode):
    """Records every ATen operation (after autocast) with the dtypes of its floating tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = [*args, *(kwargs or {}).values()]
        tensors = [a for a in flat if isinstance(a, torch.Tensor) and a.is_floating_point()]
        self.calls.append((func.__name__, [a.dtype for a in tensors], tuple(tensors[0].shape) if tensors else ()))
        return func(*args, **(kwargs or {}))

    def dtypes(self, name: str, channels: int | None = None) -> set[torch.dtype]:
        """The dtypes of the operations whose name starts with ``name`` (and whose first tensor has ``channels``)."""
        return {
            d
            for op, dtypes, shape in self.calls
            if op.startswith(name) and (channels is None or shape[1:2] == (channels,))
            for d in dtypes
        }


def test_cpu_flags_are_read_from_cpuinfo_text():
    assert cpu_flags("processor : 0\nflags : fpu avx512_bf16 amx_bf16\n") == {"fpu", "avx512_bf16", "amx_bf16"}
    assert cpu_flags("processor : 0\n") == frozenset()


@pytest.mark.parametrize(
    ("flags", "expected", "named"),
    [
        ("fpu sse avx2 fma", torch.float32, "neither"),
        ("avx2 avx512f avx512_bf16", torch.bfloat16, "avx512_bf16"),
        ("avx2 avx512_bf16 amx_tile amx_bf16", torch.bfloat16, "amx_bf16"),
    ],
)
def test_auto_picks_bfloat16_only_with_the_cpu_flags(monkeypatch, flags, expected, named):
    play_cpu(monkeypatch, flags)
    dtype, reason = resolve_precision("auto", "cpu")
    assert dtype == expected and named in reason
    assert resolve_precision("float32", "cpu")[0] == torch.float32
    assert resolve_precision("bfloat16", "cpu")[0] == torch.bfloat16
    assert ("AMX yes" in describe_cpu()) == ("amx_bf16" in flags)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float8", "cpu")


def test_auto_on_a_plain_cpu_gives_the_float32_output_bit_for_bit():
    model = tiny("mana")
    clip = image_like_clip(4, 8, 10)[0]
    assert torch.equal(upscale_clip(model, clip, precision="auto"), upscale_clip(model, clip))


@pytest.mark.parametrize("name", MODELS)
def test_float32_islands_run_in_float32_and_the_rest_in_bfloat16(name):
    model = tiny(name)
    islands = float32_islands(model)
    inner = [m for _, island in islands for m in island.modules()]
    seen: list[tuple[str, torch.dtype, bool]] = []

    def record(module, args, out):
        out = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(out, torch.Tensor):
            seen.append((type(module).__name__, out.dtype, torch.is_autocast_enabled("cpu")))

    handles = [m.register_forward_hook(record) for m in inner]
    clip = image_like_clip(model.num_frames, 12, 12)
    with torch.no_grad(), low_precision_weights(model), mixed_precision(model), DtypeLog() as log:
        out = model(clip)
    for handle in handles:
        handle.remove()
    assert out.dtype == torch.float32  # the skip is added in float32
    assert all(dtype == torch.float32 for _, dtype, _ in seen), seen
    assert len(seen) >= len(islands)
    assert log.dtypes("grid_sampler") <= {torch.float32}
    assert log.dtypes("upsample_", channels=3) == {torch.float32}  # the bilinear/bicubic skip of the RGB frames
    assert torch.bfloat16 in log.dtypes("convolution") | log.dtypes("mkldnn_convolution")
    # everything is as it was afterwards
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(
        hasattr(getattr(m, k, None), "float32_island") for m in model.modules() for k in ("forward", "align")
    )


def test_autocast_is_off_inside_islands():
    model = tiny("vsrt")
    states = []
    for module in model.spynet.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, a, o: states.append((torch.is_autocast_enabled("cpu"), o.dtype)))
    outside = []
    model.conv_first.register_forward_hook(lambda m, a, o: outside.append(o.dtype))
    with torch.no_grad(), mixed_precision(model):
        model(image_like_clip(3, 8, 8))
    assert states and all(state == (False, torch.float32) for state in states)
    assert outside == [torch.bfloat16]


def test_a_network_declares_its_own_islands():
    class Net(nn.Module):
        float32_modules = ("head",)

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 1)
            self.head = nn.Sequential(nn.Conv2d(3, 3, 1), nn.GroupNorm(1, 3))

        def forward(self, x):
            return self.head(self.body(x))

    net = Net()
    assert [name for name, _ in float32_islands(net)] == ["head"]  # the GroupNorm inside is covered by it
    dtypes = []
    net.head[0].register_forward_hook(lambda m, a, o: dtypes.append((a[0].dtype, o.dtype)))
    with torch.no_grad(), mixed_precision(net):
        assert net(torch.rand(1, 3, 4, 4)).dtype == torch.float32
    assert dtypes == [(torch.float32, torch.float32)]


# bfloat16 keeps 8 significant bits: each rounding is off by at most u = 2^-9 relative (RMS u / sqrt(3)). A
# convolution stack of L roundings on the residual path leaves it off by about sqrt(L) * u relative, i.e. for
# L <= 25 and a residual of std 0.1 an RMS error near 1e-3 (60 dB); the bound leaves a factor 10 (20 dB) for
# the gain of random weights. It holds wherever bfloat16 is rounded to nearest, whatever the CPU's kernels.
TINY_PSNR_BOUND_DB = 40.0


@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_output_is_close_to_float32(name):
    model = tiny(name)
    clip = image_like_clip(model.num_frames, 12, 12)
    scale_last_conv(model, clip)
    with torch.no_grad():
        reference = model(clip)
    with torch.no_grad(), low_precision_weights(model), mixed_precision(model):
        low = model(clip)
    assert psnr(low, reference) >= TINY_PSNR_BOUND_DB


def test_upscale_clip_in_bfloat16_keeps_the_model_float32():
    model = tiny("vsrt")
    clip = image_like_clip(5, 8, 8)
    scale_last_conv(model, clip)
    reference = upscale_clip(model, clip[0])
    low = upscale_clip(model, clip[0], precision="bfloat16")
    assert low.dtype == torch.float32 and low.shape == reference.shape
    assert not torch.equal(low, reference)
    assert psnr(low, reference) >= TINY_PSNR_BOUND_DB
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_auto_runs_bfloat16_where_the_cpu_has_it(monkeypatch):
    model = tiny("mana")
    clip = image_like_clip(3, 8, 8)[0]
    play_cpu(monkeypatch, "avx512f avx512_bf16")
    assert compute_dtype(model, "auto")[0] == torch.bfloat16
    assert torch.equal(upscale_clip(model, clip, precision="auto"), upscale_clip(model, clip, precision="bfloat16"))


def test_a_cast_model_runs_as_it_is():
    model = tiny("mana").to(torch.bfloat16)
    assert compute_dtype(model, "auto")[0] == torch.bfloat16
    assert upscale_clip(model, image_like_clip(3, 8, 8)[0], precision="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="float32 model"):
        compute_dtype(model, "bfloat16")
