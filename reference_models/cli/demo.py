"""``python -m reference_models demo``: train a tiny model on CPU and show that it beats bicubic.

With no arguments and no network, the demo

1. builds a short clip with real texture: a camera panning with a gentle zoom across a photograph that ships
   inside scikit-image (``chelsea``, the cat: fur and whiskers; ``--photo`` to choose another), 40 frames;
2. trains the ``tiny`` preset of a model (default MANA, ``--model`` to choose) on the first 28 frames for about
   two minutes on CPU (the step count is calibrated to ``--seconds`` on the machine it runs on, or given with
   ``--steps``) -- the fine-tuning-on-your-own-footage use case;
3. super-resolves the held-out last 12 frames (scoring the 6 whose whole input window is held out, so no
   scored input frame was seen in training) and writes ``demo_out/`` (or ``--output``): ``sr/`` (the SR frames),
   ``side_by_side.png`` (bicubic | model | ground truth, with a zoomed detail), ``metrics.md`` (the table it
   prints: PSNR/SSIM of bicubic and of the model on the held-out frames, and the gain), ``model.pt`` (the
   trained checkpoint, runnable with ``python -m reference_models run``) and ``train/`` (training log and curve).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# torch, numpy and the training code are imported inside the functions that use them, so that
# `python -m reference_models demo --help` answers at once.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from reference_models.data.dataset import TensorClip, TrainClips

__all__ = ["DemoSettings", "load_photo", "pan_zoom_clip", "demo_clips", "planned_steps", "run_demo", "main"]

DEFAULT_PHOTO = "chelsea"


def load_photo(name: str) -> torch.Tensor:
    """A photograph bundled with scikit-image (``skimage/data/<name>.png|jpg``), ``(3, H, W)`` float in [0, 1].

    Read from the installed package's folder, so it never touches the network.
    """
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        raise FileNotFoundError(f"scikit-image ships no image {name!r} in {folder}")
    with Image.open(matches[0]) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pan_zoom_clip(photo: torch.Tensor, frames: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A clip of a camera panning across ``photo`` with a gentle zoom: ``(frames, 3, H, W)`` in [0, 1].

    The camera moves 1 to 2 photo pixels per frame in a random direction (sub-pixel shifts at the LR
    scale, what multi-frame SR exploits) and zooms out from 1x to about 1.15x, so every frame shows the
    photo at or below its native resolution (no upsampling blur in the ground truth).
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    _, ph, pw = photo.shape
    h, w = size
    angle = float(torch.rand((), generator=g)) * 2 * math.pi
    speed = 1.0 + float(torch.rand((), generator=g))
    zoom_end = 1.0 + 0.15 * float(torch.rand((), generator=g))
    # Leave room for the whole path at the widest zoom.
    reach_y = h * zoom_end / 2 + speed * frames
    reach_x = w * zoom_end / 2 + speed * frames
    if 2 * reach_y >= ph or 2 * reach_x >= pw:
        raise ValueError(f"photo {ph}x{pw} too small for {frames} frames of {h}x{w}")
    cy = reach_y + float(torch.rand((), generator=g)) * (ph - 2 * reach_y)
    cx = reach_x + float(torch.rand((), generator=g)) * (pw - 2 * reach_x)
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    grids = []
    for t in range(frames):
        zoom = 1.0 + (zoom_end - 1.0) * t / max(1, frames - 1)
        y = cy + speed * t * math.sin(angle) + ys * zoom
        x = cx + speed * t * math.cos(angle) + xs * zoom
        # grid_sample's normalised coordinates (align_corners=False): pixel centre i is at (2i + 1) / n - 1.
        gy, gx = (2 * y + 1) / ph - 1, (2 * x + 1) / pw - 1
        grids.append(torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float())
    clip = F.grid_sample(
        photo[None].expand(frames, -1, -1, -1),
        torch.stack(grids),
        mode="bicubic",
        padding_mode="reflection",
        align_corners=False,
    )
    return clip.clamp(0, 1)


def demo_clips(
    photo: str = DEFAULT_PHOTO, frames: int = 40, held_out: int = 12, size: tuple[int, int] = (128, 192), seed: int = 0
) -> tuple[TensorClip, TensorClip]:
    """The demo footage, split in time: ``(training frames, held-out frames)`` (the last ``held_out`` frames)."""
    from reference_models.data.dataset import TensorClip

    if not 0 < held_out < frames:
        raise ValueError(f"held_out must be between 1 and frames - 1 = {frames - 1}, got {held_out}")
    clip = pan_zoom_clip(load_photo(photo), frames, size, seed=seed)
    return TensorClip(clip[: frames - held_out], name=f"{photo}-train"), TensorClip(
        clip[frames - held_out :], name=f"{photo}-held-out"
    )


@dataclass
class DemoSettings:
    """What the demo trains and how long.

    Attributes:
        model: reference model name.
        preset: model preset.
        seconds: training time budget; the step count is calibrated to it (ignored when ``steps`` is given).
        steps: fixed number of training steps.
        min_steps: the calibrated step count never goes below this (what the tiny models need to beat bicubic
            reliably), so a slow or busy machine takes longer rather than showing a half-trained model.
        batch_size, patch_size, lr: the optimisation (LR patch size; a high learning rate for a short run).
        photo: the scikit-image photograph the clip pans across.
        frames, held_out, size: frames of the clip, how many of the last ones are held out, HR frame size.
        output: the output folder.
        seed: everything random.
        device: ``"cpu"`` (default) or ``"cuda"``.
        threads: torch CPU threads (``None``: leave as is).
        progress: show the progress bar.
    """

    model: str = "mana"
    preset: str = "tiny"
    seconds: float = 120.0
    steps: int | None = None
    min_steps: int = 300
    batch_size: int = 8
    patch_size: int = 16
    lr: float = 1e-3
    photo: str = DEFAULT_PHOTO
    frames: int = 40
    held_out: int = 12
    size: tuple[int, int] = (128, 192)
    output: str = "demo_out"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True


def _calibrate(model: nn.Module, data: TrainClips, settings: DemoSettings) -> float:
    """Seconds per training step on this machine (three timed steps of a throwaway copy, after one warm-up)."""
    import numpy as np
    import torch

    probe = copy.deepcopy(model).to(settings.device).train()
    opt = torch.optim.Adam(probe.parameters(), lr=0.0)
    batch = torch.stack([data[i]["lr"] for i in range(settings.batch_size)]).to(settings.device)
    times = []
    for k in range(4):
        start = time.perf_counter()
        out = probe(batch)
        out.float().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k:
            times.append(time.perf_counter() - start)
    # Data loading and bookkeeping add a little to the pure compute.
    return float(np.median(times)) * 1.1


def planned_steps(seconds_per_step: float, settings: DemoSettings) -> int:
    """Training steps that fill ``settings.seconds``, but never fewer than ``settings.min_steps``.

    Examples:
        >>> planned_steps(0.2, DemoSettings(seconds=120)), planned_steps(2.0, DemoSettings(seconds=120))
        (600, 300)
    """
    return max(settings.min_steps, int(settings.seconds / seconds_per_step))


def _to_image(x: torch.Tensor):  # noqa: ANN202
    from PIL import Image

    return Image.fromarray(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())


def _side_by_side(bicubic: torch.Tensor, sr: torch.Tensor, gt: torch.Tensor, labels: Sequence[str], path: Path) -> None:
    """Three panels with labels, and under them a 2x nearest-neighbour zoom of the most textured quarter."""
    from PIL import Image, ImageDraw, ImageFont

    _, h, w = gt.shape
    ch, cw = h // 2, w // 2
    # The crop with the most ground-truth detail (gradient energy), so the difference is visible.
    grad = (gt[:, 1:, :-1] - gt[:, :-1, :-1]).abs().sum(0) + (gt[:, :-1, 1:] - gt[:, :-1, :-1]).abs().sum(0)
    best, top, left = -1.0, 0, 0
    for y in range(0, h - ch + 1, max(1, ch // 4)):
        for x in range(0, w - cw + 1, max(1, cw // 4)):
            energy = float(grad[y : y + ch - 1, x : x + cw - 1].sum())
            if energy > best:
                best, top, left = energy, y, x
    gap, label_h = 6, 18
    canvas = Image.new("RGB", (3 * w + 2 * gap, label_h + h + gap + 2 * ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (img, label) in enumerate(zip((bicubic, sr, gt), labels)):
        x0 = k * (w + gap)
        draw.text((x0 + 2, 2), label, fill=(0, 0, 0), font=font)
        canvas.paste(_to_image(img), (x0, label_h))
        zoom = _to_image(img[:, top : top + ch, left : left + cw]).resize((2 * cw, 2 * ch), Image.Resampling.NEAREST)
        canvas.paste(zoom.crop((0, 0, w, 2 * ch)), (x0, label_h + h + gap))
        draw.rectangle([x0 + left, label_h + top, x0 + left + cw - 1, label_h + top + ch - 1], outline=(255, 0, 0))
    canvas.save(path)


def run_demo(settings: DemoSettings) -> dict[str, dict[str, float]]:
    """Train, evaluate on the held-out clip, write the outputs; returns ``{"bicubic": scores, "model": scores}``
    (``psnr_y``, ``ssim_y``, ``psnr_rgb``, ``ssim_rgb``, means over the held-out frames)."""
    import numpy as np
    import torch

    from reference_models import create_model
    from reference_models.checkpoint import save_checkpoint
    from reference_models.data.dataset import TrainClips, ValClips
    from reference_models.data.degradation import bicubic_upsample
    from reference_models.training.trainer import TrainConfig, Trainer, frame_scores

    if settings.threads:
        torch.set_num_threads(settings.threads)
    out_dir = Path(settings.output).resolve()
    torch.manual_seed(settings.seed)
    model = create_model(settings.model, settings.preset)
    t, scale = model.num_frames, model.scale

    train_clip, held = demo_clips(settings.photo, settings.frames, settings.held_out, settings.size, settings.seed)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    data = TrainClips([train_clip], num_frames=t, patch_size=settings.patch_size, scale=scale, seed=settings.seed)
    steps = settings.steps
    if steps is None:
        per_step = _calibrate(model, data, settings)
        steps = planned_steps(per_step, settings)
        budget = f"{steps} steps for ~{settings.seconds:.0f} s"
        if steps == settings.min_steps:
            budget = f"this machine is slow or busy, so training the minimum {steps} steps (~{steps * per_step:.0f} s)"
        print(f"calibrated: {per_step:.2f} s per step of batch {settings.batch_size} -> {budget}")
    config = TrainConfig(
        steps=steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        betas=(0.9, 0.99),
        schedule="cosine",
        eta_min=settings.lr / 100,
        val_every=max(1, steps // 8),
        checkpoint_every=0,
        log_every=5,
        seed=settings.seed,
        device=settings.device,
        output_dir=str(out_dir / "train"),
        progress=settings.progress,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training {settings.model} ({settings.preset}, {n_params:,} parameters) on the first {len(train_clip)} frames of a "
        f"pan/zoom across scikit-image's {settings.photo!r} ({settings.size[0]}x{settings.size[1]}), "
        f"{steps} steps of {settings.batch_size} x {t} x {settings.patch_size}x{settings.patch_size} LR patches"
    )
    start = time.perf_counter()
    val = ValClips([held], num_frames=t, scale=scale, full_windows=True)
    trainer = Trainer(model, data, config, val)
    trainer.fit()
    train_seconds = time.perf_counter() - start
    save_checkpoint(model, out_dir / "model.pt")

    # Score the held-out frames whose whole input window is held out too (no reflected neighbours).
    model.eval()
    half = t // 2
    centres = [c for _, c in val.items]
    sr_dir = out_dir / "sr"
    sr_dir.mkdir(exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {"bicubic": [], "model": []}
    panels = None
    with torch.no_grad():
        for index, centre in enumerate(centres):
            item = val[index]
            lr_clip, gt = item["lr"][None].to(settings.device), item["hr"][half][None].to(settings.device)
            out = model(lr_clip)
            sr = (out[:, half] if getattr(model, "output_mode", "center") == "all" else out).float().clamp(0, 1)
            bic = bicubic_upsample(lr_clip[:, half], scale).clamp(0, 1)
            results["model"].append(frame_scores(sr, gt, config.crop_border))
            results["bicubic"].append(frame_scores(bic, gt, config.crop_border))
            _to_image(sr[0].cpu()).save(sr_dir / f"frame_{len(train_clip) + centre:03d}.png")
            if index == len(centres) // 2:
                panels = (bic[0].cpu(), sr[0].cpu(), gt[0].cpu())
    summary = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in results.items()}
    name = f"{settings.model} ({settings.preset})"
    bic_psnr, sr_psnr = summary["bicubic"]["psnr_y"], summary["model"]["psnr_y"]
    assert panels is not None  # the middle centre always sets them
    _side_by_side(
        *panels,
        labels=(f"bicubic {bic_psnr:.2f} dB", f"{name} {sr_psnr:.2f} dB", "ground truth"),
        path=out_dir / "side_by_side.png",
    )

    table = _table(summary, name, len(centres), held, steps, train_seconds)
    (out_dir / "metrics.md").write_text(table + "\n")
    print()
    print(table)
    print(f"\nwrote {out_dir}/: {', '.join(_written(out_dir, len(centres)))}")
    return summary


def _written(out_dir: Path, frames: int) -> list[str]:
    """What the demo wrote, as found on disk (a file that is not there is not listed)."""
    names = [f"sr/ ({frames} frames)"] if (out_dir / "sr").is_dir() else []
    names += [n for n in ("side_by_side.png", "metrics.md", "model.pt") if (out_dir / n).exists()]
    logs = [n for n in ("log.csv", "curve.png") if (out_dir / "train" / n).exists()]
    return names + ([f"train/ ({', '.join(logs)})"] if logs else [])


def _table(
    summary: dict[str, dict[str, float]], name: str, frames: int, held: TensorClip, steps: int, seconds: float
) -> str:
    rows = [
        f"Held-out frames: the last {len(held)} of the clip (never seen in training), the {frames} with a full window scored, x4, "
        f"{held.data.shape[-2]}x{held.data.shape[-1]} HR; border of 4 px ignored; model trained {steps} steps in {seconds:.0f} s.",
        "",
        "| method | PSNR-Y (dB) | SSIM-Y | PSNR-RGB (dB) | SSIM-RGB |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("bicubic", "bicubic"), ("model", name)):
        s = summary[key]
        rows.append(f"| {label} | {s['psnr_y']:.2f} | {s['ssim_y']:.4f} | {s['psnr_rgb']:.2f} | {s['ssim_rgb']:.4f} |")
    b, m = summary["bicubic"], summary["model"]
    rows.append(
        f"| gain over bicubic | {m['psnr_y'] - b['psnr_y']:+.2f} | {m['ssim_y'] - b['ssim_y']:+.4f} | "
        f"{m['psnr_rgb'] - b['psnr_rgb']:+.2f} | {m['ssim_rgb'] - b['ssim_rgb']:+.4f} |"
    )
    verdict = "beats bicubic by" if m["psnr_y"] > b["psnr_y"] else "does NOT beat bicubic:"
    rows.append("")
    rows.append(
        f"{name} {verdict} {m['psnr_y'] - b['psnr_y']:+.2f} dB PSNR-Y ({m['psnr_rgb'] - b['psnr_rgb']:+.2f} dB RGB) on the held-out frames."
    )
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    from reference_models import list_models

    p = argparse.ArgumentParser(
        prog="python -m reference_models demo",
        description="Train a tiny model on built-in textured clips (no download) and compare it with bicubic on held-out frames.",
    )
    p.add_argument("--model", default="mana", choices=list_models(), help="model to train (default: mana)")
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument(
        "--photo",
        default=DEFAULT_PHOTO,
        help="scikit-image photo to pan across: chelsea (default), astronaut, coffee, rocket, ...",
    )
    p.add_argument("--seconds", type=float, default=120.0, help="training time budget in seconds (default: 120)")
    p.add_argument("--steps", type=int, help="train exactly this many steps instead of calibrating to --seconds")
    p.add_argument("--output", default="demo_out", help="output folder (default: demo_out in the current directory)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips, the data stream and the model (default: 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``demo`` command; returns the exit status (1 if the model does not beat bicubic, 2 if it
    cannot run: one line ``error: ...`` on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    settings = DemoSettings(
        model=args.model,
        preset=args.preset,
        photo=args.photo,
        seconds=args.seconds,
        steps=args.steps,
        output=args.output,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
        progress=not args.quiet,
    )
    import torch

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    try:
        summary = run_demo(settings)
    except (ValueError, OSError) as exc:  # unknown photo or preset, a photo too small, an unwritable --output
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0 if summary["model"]["psnr_y"] > summary["bicubic"]["psnr_y"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
