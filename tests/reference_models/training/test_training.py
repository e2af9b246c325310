"""Training path: MATLAB-exact degradation, data sampling, schedules, MANA's stages, DASAA's auxiliary losses,
overfitting, exact resume, CLI."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader

from reference_models import create_model
from reference_models.cli.train import main as train_main
from reference_models.training import (
    CosineRestartSchedule,
    ManaThreeStageSchedule,
    TensorClip,
    TrainClips,
    TrainConfig,
    Trainer,
    ValClips,
    add_aux_losses,
    bicubic_downsample,
    bicubic_upsample,
    degrade,
    frame_scores,
    load_clips,
    make_schedule,
    memory_parameter_names,
)
from vsrblocks.metrics import psnr, ssim


# --------------------------------------------------------------------------- MATLAB imresize in numpy
def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


def _contributions(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize``'s ``contributions``: Keys cubic (a = -0.5), widened by 1/scale when shrinking,
    weights normalised, indices mirrored symmetrically at the border."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    index = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = scale * _cubic((u[:, None] - index) * scale) if scale < 1 else _cubic(u[:, None] - index)
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    return weights, mirror[np.mod(index.astype(np.int64) - 1, mirror.size)]


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """``imresize(img, scale, "bicubic")`` of an ``(H, W, C)`` float64 image, rows first as MATLAB does."""
    h, w = img.shape[:2]
    wh, ih = _contributions(h, int(np.ceil(h * scale)), scale)
    out = np.einsum("op,opwc->owc", wh, img[ih])
    ww, iw = _contributions(w, int(np.ceil(w * scale)), scale)
    return np.einsum("op,hopc->hoc", ww, out[:, iw])


def _photo(name: str = "astronaut") -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float64) / 255.0


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_bicubic_downsample_matches_matlab_imresize(name):
    """Stated tolerance: < 1e-6 on every pixel, border included (float64: ~1e-15; float32: output rounding)."""
    img = _photo(name)[:200, :236]
    ref = matlab_imresize(img, 0.25)
    x = torch.from_numpy(img).permute(2, 0, 1)
    ours64 = bicubic_downsample(x).permute(1, 2, 0).numpy()
    ours32 = bicubic_downsample(x.float()).permute(1, 2, 0).double().numpy()
    assert ours64.shape == ref.shape == (50, 59, 3)
    assert np.abs(ours64 - ref).max() < 1e-12
    assert np.abs(ours32 - ref).max() < 1e-6


def test_plain_torch_antialias_differs_only_at_the_border():
    """Why we pad: torch's own antialiased bicubic renormalises the kernel at the border instead of mirroring."""
    img = _photo()[:200, :200]
    ref = matlab_imresize(img, 0.25)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    plain = (
        torch.nn.functional.interpolate(x, size=(50, 50), mode="bicubic", antialias=True)
        .squeeze(0)
        .permute(1, 2, 0)
        .numpy()
    )
    diff = np.abs(plain - ref)
    assert diff[2:-2, 2:-2].max() < 1e-12
    assert diff.max() > 1e-3


@given(h=st.integers(1, 9), w=st.integers(1, 9), scale=st.sampled_from([2, 3, 4]), seed=st.integers(0, 2**16))
def test_bicubic_matches_matlab_at_any_size(h, w, scale, seed):
    rng = np.random.default_rng(seed)
    small = rng.random((h, w, 3))
    up = bicubic_upsample(torch.from_numpy(small).permute(2, 0, 1)).permute(1, 2, 0).numpy() if scale == 4 else None
    if up is not None:
        np.testing.assert_allclose(up, matlab_imresize(small, 4.0), atol=1e-12)
    big = rng.random((h * scale, w * scale, 3))
    down = bicubic_downsample(torch.from_numpy(big).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(down, matlab_imresize(big, 1.0 / scale), atol=1e-12)


def test_degrade_shapes_and_errors():
    clip = torch.rand(2, 5, 3, 16, 24)
    assert degrade(clip).shape == (2, 5, 3, 4, 6)
    assert degrade(clip, kind="blur", blur_sigma=1.2).shape == (2, 5, 3, 4, 6)
    with pytest.raises(ValueError, match="multiples of scale"):
        degrade(torch.rand(3, 10, 16))
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(clip, kind="jpeg")


# --------------------------------------------------------------------------- data
def _clip(t: int = 9, h: int = 52, w: int = 44, seed: int = 0) -> TensorClip:
    return TensorClip(torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed)))


def _locate(frames: torch.Tensor, patch: torch.Tensor) -> tuple[int, int, int]:
    t, _, size = patch.shape[0], patch.shape[1], patch.shape[-1]
    for start in range(frames.shape[0] - t + 1):
        for y in range(frames.shape[-2] - size + 1):
            for x in range(frames.shape[-1] - size + 1):
                if torch.equal(frames[start : start + t, :, y : y + size, x : x + size], patch):
                    return start, y, x
    raise AssertionError("patch not found in the clip")


@pytest.mark.parametrize("kind", ["bicubic", "blur"])
def test_training_crops_equal_crops_of_the_degraded_frame(kind):
    """Degrading a crop with a margin gives exactly the LR pixels of the degraded whole frame."""
    clip = _clip()
    frames = clip.frames(range(len(clip)))
    whole = degrade(frames, 4, kind)
    data = TrainClips([clip], num_frames=3, patch_size=5, augment=False, degradation=kind)
    for i in range(12):
        sample = data[i]
        start, y, x = _locate(frames, sample["hr"])
        assert y % 4 == 0 and x % 4 == 0
        torch.testing.assert_close(
            sample["lr"], whole[start : start + 3, :, y // 4 : y // 4 + 5, x // 4 : x // 4 + 5], atol=0, rtol=0
        )


def test_samples_are_a_function_of_seed_and_index():
    clips = [_clip(seed=1), _clip(t=4, seed=2)]
    a = TrainClips(clips, num_frames=5, patch_size=6, seed=3)
    b = TrainClips(clips, num_frames=5, patch_size=6, seed=3)
    c = TrainClips(clips, num_frames=5, patch_size=6, seed=4)
    for i in (0, 7, 10_000):
        torch.testing.assert_close(a[i]["lr"], b[i]["lr"], atol=0, rtol=0)
    assert not torch.equal(a[0]["hr"], c[0]["hr"])
    sample = a[5]
    assert sample["lr"].shape == (5, 3, 6, 6) and sample["hr"].shape == (5, 3, 24, 24)
    assert 0 <= sample["hr"].min() and sample["hr"].max() <= 1


def test_augmentation_is_the_same_for_lr_and_hr():
    """With augmentation, the LR patch is still the degraded HR patch (flips/transposes commute with it)."""
    data = TrainClips([_clip()], num_frames=3, patch_size=5, augment=True)
    for i in range(8):
        s = data[i]
        torch.testing.assert_close(s["lr"], degrade(s["hr"]), atol=0.08, rtol=0)  # border pixels see other context


def test_patch_larger_than_frames_is_reported():
    with pytest.raises(ValueError, match="smaller than the HR patch"):
        TrainClips([_clip(h=16, w=16)], num_frames=3, patch_size=8)  # up front, before any sample is drawn


def test_val_clips_reflect_at_clip_ends():
    clip = _clip(t=4)
    val = ValClips([clip], num_frames=5, frames_per_clip=None, crop=32)
    assert len(val) == 4
    item = val[0]
    frames = clip.frames(range(4))
    # window of frame 0: 2 1 0 1 2
    for k, j in enumerate([2, 1, 0, 1, 2]):
        assert torch.equal(item["hr"][k], frames[j, :, 8:40, 4:36])  # centred, on the x4 grid
    assert item["lr"].shape == (5, 3, 8, 8)
    inner = ValClips([_clip(t=9)], num_frames=5, full_windows=True)
    assert [c for _, c in inner.items] == [2, 3, 4, 5, 6]
    assert [c for _, c in ValClips([_clip(t=9)], num_frames=5, frames_per_clip=3, full_windows=True).items] == [2, 4, 6]


def test_load_clips_from_frame_folders_and_videos(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    truth = {}
    for name, n in (("clip_b", 3), ("clip_a", 12)):
        folder = tmp_path / name
        folder.mkdir()
        frames = rng.integers(0, 256, (n, 16, 20, 3), dtype=np.uint8)
        truth[name] = frames
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / f"frame_{i}.png")  # natural order: frame_2 before frame_10
    av = pytest.importorskip("av")
    with av.open(str(tmp_path / "video.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for _ in range(6):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clips = load_clips(tmp_path)
    assert [c.name for c in clips] == ["clip_a", "clip_b", "video"]
    assert [len(c) for c in clips] == [12, 3, 6]
    for clip in clips[:2]:
        for i in range(len(clip)):
            np.testing.assert_array_equal(clip[i].permute(1, 2, 0).numpy(), truth[clip.name][i])
    assert clips[2][5].shape == (3, 24, 32)


def test_load_clips_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_clips(tmp_path / "missing")
    with pytest.raises(ValueError, match="no clips"):
        load_clips(tmp_path)


# --------------------------------------------------------------------------- schedules
def test_cosine_restarts():
    s = CosineRestartSchedule(total_steps=300, lr=2e-4, cycles=3, eta_min=1e-7)
    assert s.lr(0) == s.lr(100) == s.lr(200) == pytest.approx(2e-4)
    assert s.lr(99) == pytest.approx(1e-7, abs=1e-7)
    assert s.lr(50) == pytest.approx((2e-4 + 1e-7) / 2)
    assert all(s.lr(k) >= s.lr(k + 1) for k in range(99))
    assert make_schedule(**s.state_dict()).state_dict() == s.state_dict()


def test_mana_stage_boundaries():
    s = ManaThreeStageSchedule(total_steps=150_000)
    assert s.boundaries == (90_000, 120_000)  # the paper's 90k / 30k / 30k
    assert (s.stage(89_999).loss, s.stage(90_000).loss, s.stage(120_000).loss) == ("pixel", "memory", "pixel")
    assert make_schedule("mana-3stage", 10, lr=3e-4).lrs == pytest.approx([3e-4, 3e-4, 3e-5])
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("step", 10)


# --------------------------------------------------------------------------- the trainer
class TinyVSR(nn.Module):
    """A residual-on-bilinear network, small enough to train in seconds on CPU."""

    num_frames, scale, output_mode = 3, 4, "center"

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(9, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 48, 3, padding=1),
        )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        base = nn.functional.interpolate(clip[:, 1], scale_factor=4, mode="bilinear", align_corners=False)
        return nn.functional.pixel_shuffle(self.body(clip.flatten(1, 2)), 4) + base


def _photo_clip(t: int, size: int, seed: int = 0) -> TensorClip:
    """Frames of a photo shifted by a pixel per frame (real texture, real motion)."""
    img = torch.from_numpy(_photo("coffee")).permute(2, 0, 1).float()
    y0 = 120 + 7 * seed
    return TensorClip(torch.stack([img[:, y0 : y0 + size, 200 + k : 200 + k + size] for k in range(t)]))


def _config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(
        **{
            "output_dir": str(tmp_path),
            "progress": False,
            "device": "cpu",
            "val_every": 0,
            "checkpoint_every": 0,
            "log_every": 1,
            **kw,
        }
    )


@pytest.mark.parametrize("model_name", ["local", "mana"])
def test_tiny_model_overfits_a_tiny_clip(tmp_path, model_name):
    """The loss on one fixed clip drops by more than 10x."""
    torch.manual_seed(0)
    if model_name == "local":
        model, steps, lr = TinyVSR(), 300, 2e-3
    else:
        model, steps, lr = create_model("mana", "tiny"), 200, 2e-3
    t = model.num_frames
    clip = _photo_clip(t, 32)
    data = TrainClips([clip], num_frames=t, patch_size=8, augment=False)
    trainer = Trainer(model, data, _config(tmp_path, steps=steps, batch_size=1, lr=lr, eta_min=lr / 100, loss="l1"))
    losses = [r.loss for r in trainer.fit()]
    first, last = losses[0], float(np.mean(losses[-10:]))
    print(f"{model_name}: loss {first:.4f} -> {last:.5f} ({first / last:.1f}x) in {steps} steps")
    assert first / last > 10


def _run(tmp_path, model_fn, steps, until=None, resume=None, **kw):
    torch.manual_seed(0)
    model = model_fn()
    data = TrainClips(
        [_photo_clip(model.num_frames, 40, seed=s) for s in range(2)], num_frames=model.num_frames, patch_size=6, seed=5
    )
    trainer = Trainer(
        model, data, _config(tmp_path, steps=steps, batch_size=2, lr=1e-3, grad_clip=0.5, checkpoint_every=3, **kw)
    )
    if resume:
        trainer.load_checkpoint(resume)
    trainer.fit(until)
    return trainer


@pytest.mark.thread_counts
@pytest.mark.parametrize("schedule", ["cosine", "mana-3stage"])
def test_resume_continues_the_exact_loss_trajectory(num_threads, tmp_path, schedule):
    """8 steps unbroken == 3 steps, save, a fresh process state, resume for 5 (the stage boundary falls after it)."""
    model_fn = (lambda: create_model("mana", "tiny")) if schedule == "mana-3stage" else TinyVSR
    whole = _run(tmp_path / "whole", model_fn, 8, schedule=schedule, cycles=2)
    _run(tmp_path / "part", model_fn, 8, until=3, schedule=schedule, cycles=2)
    ckpt = tmp_path / "part" / "last.pt"
    raw = torch.load(ckpt, weights_only=True)  # our checkpoints need no pickled code
    assert raw["training"]["step"] == 3 and raw["training"]["data"]["next_index"] == 6
    torch.manual_seed(1234)  # disturb every RNG: the checkpoint must restore them
    np.random.seed(1234)
    resumed = _run(tmp_path / "part", model_fn, 8, resume=ckpt, schedule=schedule, cycles=2)
    a, b = [r.loss for r in whole.rows], [r.loss for r in resumed.rows]
    print(f"{schedule}: unbroken {a}\n{'':>{len(schedule) + 2}}resumed  {b}")
    assert len(a) == len(b) == 8
    assert a == b  # bit-exact
    assert [r.lr for r in whole.rows] == [r.lr for r in resumed.rows]
    for (n, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n


def test_checkpoint_restores_rng_states(tmp_path):
    import random

    trainer = _run(tmp_path, TinyVSR, 2)
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    expected = (torch.rand(4), np.random.rand(4), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    other = Trainer(TinyVSR(), trainer.train_data, trainer.config)
    other.load_checkpoint(path)
    got = (torch.rand(4), np.random.rand(4), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    assert other.step == 2


def test_mana_three_stages_update_exactly_their_parameters(tmp_path):
    """Stage 1: everything but the memory module; stage 2: only the memory bank moves (the memory loss does
    not depend on the memory's output projection); stage 3: everything."""
    torch.manual_seed(0)
    model = create_model("mana", "tiny")
    memory = memory_parameter_names(model)
    assert memory == {"attention.memory.mb", "attention.memory.W_z1.weight", "attention.memory.W_z1.bias"}
    everything = {n for n, _ in model.named_parameters()}
    data = TrainClips([_photo_clip(7, 32)], num_frames=7, patch_size=6)
    trainer = Trainer(
        model,
        data,
        _config(tmp_path, steps=12, batch_size=2, lr=1e-3, schedule="mana-3stage", stage_fractions=(4, 4, 4)),
    )
    assert trainer.schedule.boundaries == (4, 8)

    def snapshot():
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    changed_per_stage, losses = [], []
    for until in (4, 8, 12):
        before = snapshot()
        trainer.fit(until)
        after = snapshot()
        changed_per_stage.append({n for n in everything if not torch.equal(before[n], after[n])})
        losses.append(trainer.rows[-1].loss)
        if until == 8:
            assert trainer.rows[-1].stage == "stage2-memory"
            assert trainer.rows[-1].loss == pytest.approx(float(model.last_memory_loss.detach()), rel=0.5)
    stage1, stage2, stage3 = changed_per_stage
    assert stage1 == everything - memory
    assert stage2 == {"attention.memory.mb"}
    assert stage3 == everything
    assert trainer.trainable_parameter_names(0) == everything - memory
    assert trainer.trainable_parameter_names(5) == memory
    assert trainer.trainable_parameter_names(9) == everything


def test_mana_3stage_needs_a_memory_module(tmp_path):
    data = TrainClips([_photo_clip(3, 32)], num_frames=3, patch_size=4)
    with pytest.raises(ValueError, match="memory module"):
        Trainer(TinyVSR(), data, _config(tmp_path, schedule="mana-3stage"))


def test_add_aux_losses_adds_the_weighted_sum():
    pixel = torch.tensor(0.5)
    aux = {"photometric": torch.tensor(0.2), "cycle": torch.tensor(0.3), "smoothness": torch.tensor(0.1)}
    assert float(add_aux_losses(pixel, aux, 0.005)) == pytest.approx(0.5 + 0.005 * 0.6)
    assert add_aux_losses(pixel, None, 0.005) is pixel
    assert TrainConfig().aux_weight == 0.005  # PASSRnet's


@pytest.mark.parametrize("aux_losses", [False, True])
def test_training_step_adds_dasaa_aux_losses_only_when_switched_on(tmp_path, aux_losses):
    """The step's loss is the pixel loss plus ``aux_weight`` times the sum of the model's auxiliary losses,
    recomputed here on a copy of the model taken before the step."""
    torch.manual_seed(0)
    model = create_model("dasaa", "tiny", num_frames=3, aux_losses=aux_losses)
    before = copy.deepcopy(model)
    data = TrainClips([_photo_clip(3, 32)], num_frames=3, patch_size=6)
    trainer = Trainer(model, data, _config(tmp_path, steps=1, batch_size=2, aux_weight=0.5))
    batch = next(iter(DataLoader(data, batch_size=2)))
    loss = trainer.train_step(batch)
    with torch.no_grad():
        expected = trainer.criterion(before(batch["lr"]), batch["hr"][:, 1])
        if aux_losses:
            expected = expected + 0.5 * sum(before.last_aux_losses.values())
        else:
            assert before.last_aux_losses is None
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_validation_logs_and_curve(tmp_path):
    torch.manual_seed(0)
    data = TrainClips([_photo_clip(3, 40)], num_frames=3, patch_size=8)
    val = ValClips([_photo_clip(5, 48, seed=3)], num_frames=3, frames_per_clip=2)
    trainer = Trainer(
        TinyVSR(), data, _config(tmp_path, steps=6, batch_size=2, lr=1e-3, val_every=3, checkpoint_every=3), val
    )
    trainer.fit()
    assert [v["step"] for v in trainer.val_results] == [3, 6]
    result = trainer.val_results[-1]
    assert {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "bicubic_psnr_y", "bicubic_ssim_y"} <= set(result)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 6 and rows[2]["psnr_y"] and not rows[1]["psnr_y"]
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["config"]["steps"] == 6 and len(log["rows"]) == 6
    from PIL import Image

    assert Image.open(tmp_path / "curve.png").size == (960, 320)
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()


class _BilinearClip(nn.Module):
    """A clip model (every frame out) that is bilinear upsampling, with one parameter so it can train."""

    num_frames, scale, output_mode = 3, 4, "all"

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        frames = nn.functional.interpolate(clip.flatten(0, 1), scale_factor=4, mode="bilinear", align_corners=False)
        return self.gain * frames.unflatten(0, clip.shape[:2])


def test_validation_of_a_clip_model_scores_its_centre_frame(tmp_path):
    val = ValClips([_photo_clip(5, 48, seed=3)], num_frames=3, frames_per_clip=2)
    data = TrainClips([_photo_clip(3, 40)], num_frames=3, patch_size=8)
    result = Trainer(_BilinearClip(), data, _config(tmp_path, steps=1, crop_border=4), val).validate()
    expected: dict[str, list[float]] = {}
    for item in val:
        lr, hr = item["lr"][None], item["hr"][None]
        pred = nn.functional.interpolate(lr[:, 1], scale_factor=4, mode="bilinear", align_corners=False).clamp(0, 1)
        for key, value in frame_scores(pred, hr[:, 1], 4).items():
            expected.setdefault(key, []).append(value)
    for key, values in expected.items():
        assert result[key] == pytest.approx(float(np.mean(values)), rel=1e-6), key


def test_compiled_training_matches_eager(tmp_path):
    """``compile`` runs the model through torch.compile (aot_eager here: no C++ build on CI) with the same losses."""
    torch._dynamo.reset()
    eager = _run(tmp_path / "eager", TinyVSR, 3)
    compiled = _run(tmp_path / "compiled", TinyVSR, 3, compile="aot_eager")
    np.testing.assert_allclose([r.loss for r in compiled.rows], [r.loss for r in eager.rows], rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda(tmp_path):
    data = TrainClips([_photo_clip(3, 40)], num_frames=3, patch_size=8)
    trainer = Trainer(TinyVSR(), data, _config(tmp_path, steps=5, batch_size=2, device="cuda", amp=True, lr=1e-3))
    losses = [r.loss for r in trainer.fit()]
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16) and all(np.isfinite(losses))


# --------------------------------------------------------------------------- command line
def test_cli_trains_and_resumes(tmp_path, capsys):
    from PIL import Image

    img = (_photo("coffee") * 255).astype(np.uint8)
    for c in range(3):
        folder = tmp_path / "data" / f"clip{c}"
        folder.mkdir(parents=True)
        for k in range(8):
            Image.fromarray(img[100 + 30 * c : 164 + 30 * c, 200 + k : 264 + k]).save(folder / f"{k:03d}.png")
    out = tmp_path / "run"
    args = [
        "mana",
        "--data",
        str(tmp_path / "data"),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--patch-size",
        "8",
        "--val-holdout",
        "1",
    ]
    args += [
        "--val-every",
        "2",
        "--val-frames",
        "2",
        "--val-crop",
        "48",
        "--checkpoint-every",
        "2",
        "--output",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert train_main(args) == 0
    assert {"last.pt", "best.pt", "log.csv", "log.json", "curve.png"} <= {p.name for p in out.iterdir()}
    assert "PSNR-Y" in capsys.readouterr().out
    assert train_main(["mana", "--data", str(tmp_path / "data"), "--resume", str(out / "last.pt"), "--steps", "6"]) == 0
    assert "resumed" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(6))
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["training"]["metadata"]["options"]["patch_size"] == 8  # resumed with the original options
    assert saved["model_spec"]["name"] == "mana"


def test_cli_trains_and_resumes_dasaa_with_aux_losses(tmp_path, capsys):
    from PIL import Image

    img = (_photo("coffee") * 255).astype(np.uint8)
    folder = tmp_path / "data" / "clip"
    folder.mkdir(parents=True)
    for k in range(5):
        Image.fromarray(img[100:132, 200 + k : 232 + k]).save(folder / f"{k:03d}.png")
    out = tmp_path / "run"
    args = [
        "dasaa",
        "--data",
        str(tmp_path / "data"),
        "--aux-losses",
        "--aux-weight",
        "0.01",
        "--steps",
        "2",
        "--batch-size",
        "1",
    ]
    assert train_main([*args, "--patch-size", "6", "--output", str(out), "--quiet", "--device", "cpu"]) == 0
    assert (
        train_main(["dasaa", "--data", str(tmp_path / "data"), "--resume", str(out / "last.pt"), "--steps", "3"]) == 0
    )
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["model_spec"]["overrides"] == {"aux_losses": True}
    assert saved["training"]["config"]["aux_weight"] == 0.01 and saved["training"]["step"] == 3


def test_cli_bad_inputs_exit_with_one_line(tmp_path, capsys):
    """Every input the user can get wrong ends with one ``error:`` line, status 1, no traceback and no output folder."""
    from PIL import Image

    from reference_models.checkpoint import save_checkpoint

    data = tmp_path / "data" / "clip"
    data.mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(data / f"{k}.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    weights_only = tmp_path / "mana.pt"
    save_checkpoint(create_model("mana", "tiny"), weights_only)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage" * 50)
    root = str(tmp_path / "data")
    cases = [
        (["mana", "--data", str(tmp_path / "missing")], "does not exist"),
        (["mana", "--data", str(empty)], "no clips in"),
        (["mana", "--data", root], "smaller than the HR patch"),
        (["mana", "--data", root, "--patch-size", "4", "--resume", str(tmp_path / "nope.pt")], "does not exist"),
        (["mana", "--data", root, "--patch-size", "4", "--resume", str(corrupt)], "cannot read checkpoint"),
        (["mana", "--data", root, "--patch-size", "4", "--resume", str(weights_only)], "no training state"),
        (["vsrt", "--data", root, "--patch-size", "4", "--weights", str(weights_only)], "holds mana"),
        (["mana", "--data", root, "--patch-size", "4", "--preset", "huge"], "unknown preset 'huge'"),
        (["mana", "--data", root, "--patch-size", "4", "--val-holdout", "1"], "leaves no training clip"),
        (["mana", "--data", root, "--patch-size", "4", "--steps", "0"], "steps and batch_size must be >= 1"),
        (
            ["mana", "--data", root, "--patch-size", "4", "--aux-losses"],
            "--aux-losses: only dasaa has auxiliary losses",
        ),
    ]
    for argv, message in cases:
        out = tmp_path / "run"
        assert train_main([*argv, "--output", str(out), "--quiet"]) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
        assert not out.exists(), argv


def test_frame_scores_are_the_basicsr_metrics_and_drop_the_border_on_small_frames():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 24, 24, generator=g)
    pred = (target + 0.05 * torch.randn(2, 3, 24, 24, generator=g)).clamp(0, 1)
    scores = frame_scores(pred, target, crop_border=4)
    assert scores["psnr_y"] == pytest.approx(float(psnr(pred, target, crop_border=4, test_y_channel=True).mean()))
    assert scores["ssim_rgb"] == pytest.approx(float(ssim(pred, target, crop_border=4).mean()))
    small_pred, small_target = pred[..., :16, :16], target[..., :16, :16]  # 16 - 2 * 4 < 11: no room for SSIM's window
    small = frame_scores(small_pred, small_target, crop_border=4)
    assert small["psnr_rgb"] == pytest.approx(float(psnr(small_pred, small_target).mean()))
