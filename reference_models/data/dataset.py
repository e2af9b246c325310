"""Training and validation samples from folders of high-resolution clips.

A *clip* is a sequence of RGB frames: a sub-folder of image files (sorted in natural order, so
``frame_2.png`` comes before ``frame_10.png``), a video file (decoded with PyAV, the ``video`` extra), or an
in-memory tensor. Files are read and converted as ``python -m reference_models run`` reads them
(:mod:`reference_models.io.video`). :func:`load_clips` finds them under a root folder.

:class:`TrainClips` draws, for sample ``i``, a random temporal window of ``num_frames`` frames, a random
``patch_size * scale`` HR crop (aligned to the scale grid), random flips and a transpose (together the eight
rotations/reflections), and makes the LR patch on the fly by degrading a slightly larger region and trimming
it, which gives exactly the pixels that degrading the whole frame would. All randomness of sample ``i``
comes from a generator seeded with ``(seed, i)``, so a sample is a pure function of its index: runs are
reproducible with any number of ``DataLoader`` workers, and resuming at step ``k`` continues the same stream.

:class:`ValClips` gives full frames (or a centre crop of them): one window per evaluated frame, neighbours
reflected at the clip ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reference_models.data.dataset_error import DatasetError
from reference_models.data.degradation import DEGRADATIONS, degradation_margin, degrade
from reference_models.io.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FolderSource,
    VideoIOError,
    VideoSource,
    _to_rgb8,
    natural_key,
)

__all__ = [
    "check_lr_pairs",
    "Clip",
    "FrameCache",
    "FrameListClip",
    "FrameFolderClip",
    "VideoFileClip",
    "TensorClip",
    "load_clips",
    "TrainClips",
    "ValClips",
]


class Clip(ABC):
    """A sequence of RGB frames; ``clip[i]`` is frame ``i`` as a ``(3, H, W)`` uint8 tensor."""

    name: str

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @abstractmethod
    def __getitem__(self, index: int) -> torch.Tensor:
        """Frame ``index`` as a ``(3, H, W)`` uint8 tensor."""

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames, from the file headers where a subclass knows them (no decoding)."""
        known = self.__dict__.get("_frame_size")
        return known if known is not None else tuple(self[0].shape[-2:])  # type: ignore[return-value]

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames ``indices`` as a float ``(T, 3, H, W)`` tensor in ``[0, 1]``."""
        return torch.stack([self[i] for i in indices]).float().div_(255)


class FrameCache:
    """A byte-bounded cache of decoded frames (decoding a PNG costs more than a training step of a tiny model)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.items: OrderedDict[object, torch.Tensor] = OrderedDict()

    def get(self, key: object) -> torch.Tensor | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: object, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        self.items[key] = value
        self.used += size
        while self.used > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.used -= old.numel() * old.element_size()


def _read_frame(path: Path) -> torch.Tensor:
    """One image as ``(3, H, W)`` uint8 RGB, converted as ``python -m reference_models run`` converts frames."""
    try:
        with Image.open(path) as img:
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise VideoIOError(f"cannot read frame '{path}': {exc}") from exc
    return torch.from_numpy(np.array(_to_rgb8(array, f"'{path.parent}'", set()))).permute(2, 0, 1).contiguous()


class FrameListClip(Clip):
    """Listed frame images, read on demand and kept in a shared byte-bounded cache; the frame size is read
    from the first file's header when asked (datasets of many short clips, such as Vimeo-90K's septuplets,
    are listed without opening every file)."""

    def __init__(self, paths: Sequence[str | Path], name: str, cache: FrameCache | None = None) -> None:
        if not paths:
            raise VideoIOError(f"clip {name!r} has no frames")
        self.paths = [Path(p) for p in paths]
        self.name = name
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def frame_size(self) -> tuple[int, int]:
        if self.__dict__.get("_frame_size") is None:
            try:
                with Image.open(self.paths[0]) as img:
                    self._frame_size = (img.height, img.width)
            except (OSError, UnidentifiedImageError) as exc:
                raise VideoIOError(f"cannot read frame '{self.paths[0]}': {exc}") from exc
        return self._frame_size

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        frame = self.cache.get(path) if self.cache is not None else None
        if frame is None:
            frame = _read_frame(path)
            if self.cache is not None:
                self.cache.put(path, frame)
        return frame


class FrameFolderClip(FrameListClip):
    """A folder of frame images (natural order, one size, checked from the headers up front)."""

    def __init__(self, folder: str | Path, cache: FrameCache | None = None) -> None:
        source = FolderSource(folder)  # lists the frames and checks that they share one size
        super().__init__(source.paths, Path(folder).name, cache)
        self._frame_size = (source.height, source.width)


class VideoFileClip(Clip):
    """A video file, decoded completely with PyAV on first use and kept in memory (meant for short clips)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        source = VideoSource(self.path)
        self.length = len(source)  # counts packets without decoding
        self._frame_size = (source.height, source.width)
        self._frames: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._frames is None:
            decoded = [torch.from_numpy(f) for f in VideoSource(self.path)]
            self._frames = torch.stack(decoded).permute(0, 3, 1, 2).contiguous()
        return self._frames[index]

    def __getstate__(self) -> dict[str, object]:
        # DataLoader workers decode for themselves rather than receiving the decoded frames by pickle.
        return {**self.__dict__, "_frames": None}


class TensorClip(Clip):
    """An in-memory clip: ``(T, 3, H, W)`` float in ``[0, 1]`` or uint8."""

    def __init__(self, frames: torch.Tensor, name: str = "tensor") -> None:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"clip {name!r}: expected (T, 3, H, W), got {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            frames = frames.clamp(0, 1).mul(255).round().to(torch.uint8)
        self.data = frames.contiguous()
        self.name = name

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def load_clips(root: str | Path, cache_bytes: int = 2 << 30) -> list[Clip]:
    """All clips under ``root``: each sub-folder holding images is a clip, each video file is a clip, and
    images directly inside ``root`` form one more clip. In natural name order.

    Args:
        root: the data folder.
        cache_bytes: memory for decoded frames of folder clips, shared by all of them (default 2 GiB).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        VideoIOError: no clip found (the message says what is looked for), or a clip that cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder '{root}' does not exist")
    cache = FrameCache(cache_bytes)
    clips: list[Clip] = []
    if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir()):
        clips.append(FrameFolderClip(root, cache=cache))
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entry.iterdir()):
            clips.append(FrameFolderClip(entry, cache=cache))
        elif entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            clips.append(VideoFileClip(entry))
    if not clips:
        raise VideoIOError(
            f"no clips in '{root}': expected sub-folders of frames ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            f"or video files ({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return clips


def _window(centre: int, num_frames: int, length: int) -> list[int]:
    """``num_frames`` indices around ``centre``, reflected at the clip ends (BasicSR's ``reflection`` padding)."""
    half = num_frames // 2
    out = []
    for i in range(centre - half, centre - half + num_frames):
        if length == 1:
            out.append(0)
            continue
        period = 2 * (length - 1)
        j = i % period
        out.append(j if j < length else period - j)
    return out


def _check_degradation(scale: int, degradation: str) -> None:
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; available: {', '.join(DEGRADATIONS)}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")


def check_lr_pairs(clips: Sequence[Clip], lr_clips: Sequence[Clip], scale: int) -> None:
    """Check that ``lr_clips`` pair with ``clips``: one each, as many frames, ``1 / scale`` of the size.

    Raises:
        DatasetError: naming the first clip that does not pair.
    """
    if len(lr_clips) != len(clips):
        raise DatasetError(f"{len(lr_clips)} LR clips for {len(clips)} HR clips")
    for hr, lr in zip(clips, lr_clips):
        if len(hr) != len(lr):
            raise DatasetError(f"clip {hr.name!r}: {len(hr)} HR frames but {len(lr)} LR frames")
        (h, w), (lh, lw) = hr.frame_size, lr.frame_size
        if (h // scale, w // scale) != (lh, lw):
            raise DatasetError(
                f"clip {hr.name!r}: LR frames are {lw}x{lh}, but HR {w}x{h} at x{scale} needs {w // scale}x{h // scale}"
            )


def _checked_lr(clips: list[Clip], lr_clips: Sequence[Clip] | None, scale: int) -> list[Clip] | None:
    if lr_clips is None:
        return None
    check_lr_pairs(clips, lr_clips, scale)
    return list(lr_clips)


class TrainClips(Dataset):
    """Random training samples: ``{"lr": (T, 3, p, p), "hr": (T, 3, s*p, s*p)}`` float in ``[0, 1]``.

    Args:
        clips: the HR clips (see :func:`load_clips`, :class:`TensorClip`).
        num_frames: frames per window ``T``; a clip shorter than that gives reflected windows.
        lr_clips: provided LR clips, one per HR clip with as many frames, ``1 / scale`` of its size (a dataset's
            LR tree, :class:`reference_models.data.VideoSet`): LR and HR patches are aligned crops of them, and
            ``degradation`` is not used. ``None``: LR patches are made from the HR crops on the fly.
        patch_size: LR crop size ``p`` (the HR crop is ``scale * p``).
        scale: the super-resolution factor ``s``.
        augment: random horizontal flip, vertical flip and transpose, the same for every frame of a sample.
        degradation: ``"bicubic"`` (MATLAB-style, antialiased) or ``"blur"`` (Gaussian blur, then subsample).
        blur_sigma: Gaussian standard deviation of ``"blur"``; a ``(low, high)`` pair draws it per sample.
        seed: the base seed; sample ``i`` depends on ``(seed, i)`` only.
        length: ``len()`` of the dataset (what one "epoch" of a ``DataLoader`` covers).

    Examples:
        >>> clip = TensorClip(torch.rand(9, 3, 48, 40))
        >>> sample = TrainClips([clip], num_frames=5, patch_size=8)[0]
        >>> sample["lr"].shape, sample["hr"].shape
        (torch.Size([5, 3, 8, 8]), torch.Size([5, 3, 32, 32]))
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        num_frames: int,
        patch_size: int = 64,
        scale: int = 4,
        augment: bool = True,
        degradation: str = "bicubic",
        blur_sigma: float | tuple[float, float] = 1.6,
        seed: int = 0,
        length: int = 1 << 30,
        lr_clips: Sequence[Clip] | None = None,
    ) -> None:
        _check_degradation(scale, degradation)
        if not clips:
            raise ValueError("TrainClips needs at least one clip")
        self.clips = list(clips)
        self.lr_clips = _checked_lr(self.clips, lr_clips, scale)
        self.num_frames = num_frames
        self.patch_size = patch_size
        self.scale = scale
        self.augment = augment
        self.degradation = degradation
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.length = length
        self._sizes: list[tuple[int, int] | None] = [None] * len(self.clips)
        self._weights = torch.tensor([max(1, len(c) - num_frames + 1) for c in self.clips], dtype=torch.float64)
        hp = patch_size * scale
        for clip in self.clips:
            height, width = (n - n % scale for n in clip.frame_size)
            if height < hp or width < hp:
                raise ValueError(
                    f"clip {clip.name!r} has {height}x{width} frames, smaller than the HR patch {hp}x{hp} "
                    f"(patch_size={patch_size} x scale={scale}); lower patch_size"
                )

    def __len__(self) -> int:
        return self.length

    def _size(self, k: int) -> tuple[int, int]:
        if self._sizes[k] is None:
            h, w = self.clips[k].frame_size
            self._sizes[k] = (h - h % self.scale, w - w % self.scale)
        return cast(tuple[int, int], self._sizes[k])

    def generator(self, index: int) -> torch.Generator:
        """The generator sample ``index`` draws from, seeded with ``(seed, index)`` through numpy's SeedSequence."""
        state = np.random.SeedSequence([self.seed, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = self.generator(index)
        k = int(torch.multinomial(self._weights, 1, generator=g))
        clip = self.clips[k]
        n, t = len(clip), self.num_frames
        if n >= t:
            start = int(torch.randint(n - t + 1, (1,), generator=g))
            indices = list(range(start, start + t))
        else:
            indices = _window(int(torch.randint(n, (1,), generator=g)), t, n)

        s, hp = self.scale, self.patch_size * self.scale
        height, width = self._size(k)  # at least the HR patch: checked in __init__
        y = s * int(torch.randint((height - hp) // s + 1, (1,), generator=g))
        x = s * int(torch.randint((width - hp) // s + 1, (1,), generator=g))
        sigma = self.blur_sigma
        if isinstance(sigma, (tuple, list)):
            sigma = float(sigma[0] + (sigma[1] - sigma[0]) * torch.rand((), generator=g, dtype=torch.float64))
        flips = torch.rand(3, generator=g) < 0.5

        if self.lr_clips is not None:
            p, ly, lx = self.patch_size, y // s, x // s
            lr = self.lr_clips[k].frames(indices)[..., ly : ly + p, lx : lx + p]
            hr = clip.frames(indices)[..., y : y + hp, x : x + hp]
        else:
            lr, hr = self._degraded_crops(k, indices, y, x, float(sigma))
        if self.augment:
            if flips[0]:
                lr, hr = lr.flip(-1), hr.flip(-1)
            if flips[1]:
                lr, hr = lr.flip(-2), hr.flip(-2)
            if flips[2]:
                lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return {"lr": lr.contiguous(), "hr": hr.contiguous()}

    def _degraded_crops(
        self, k: int, indices: list[int], y: int, x: int, sigma: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The HR crop at ``(y, x)`` of clip ``k`` and its LR patch, made by ``degradation``."""
        # Degrade the crop with a margin (clipped at the frame border), then trim: the LR pixels equal those
        # of the degraded whole frame, at a fraction of the cost.
        s, hp = self.scale, self.patch_size * self.scale
        height, width = self._size(k)
        m = degradation_margin(s, self.degradation, sigma)
        y0, y1 = max(0, y - m), min(height, y + hp + m)
        x0, x1 = max(0, x - m), min(width, x + hp + m)
        region = self.clips[k].frames(indices)[..., y0:y1, x0:x1]
        lr = degrade(region, s, self.degradation, sigma)
        p, oy, ox = self.patch_size, (y - y0) // s, (x - x0) // s
        lr = lr[..., oy : oy + p, ox : ox + p]
        hr = region[..., y - y0 : y - y0 + hp, x - x0 : x - x0 + hp]
        return lr, hr


class ValClips(Dataset):
    """Validation windows over whole frames: ``{"lr": (T, 3, h, w), "hr": (T, 3, s*h, s*w)}``, scored on the
    centre frame ``T // 2``.

    Args:
        clips: the HR clips.
        num_frames: frames per window; neighbours are reflected at the clip ends, so every frame can be scored.
        scale: the super-resolution factor.
        degradation: as in :class:`TrainClips`.
        blur_sigma: Gaussian standard deviation of ``"blur"``.
        frames_per_clip: score this many frames per clip, evenly spaced (``None``: every frame).
        crop: keep a centred ``crop x crop`` HR region of every frame (``None``: whole frames), to bound the
            cost of validating on large footage.
        full_windows: score only frames whose whole window lies inside the clip (no reflected neighbours).
        lr_clips: provided LR clips paired with ``clips`` (as in :class:`TrainClips`); ``None``: degrade.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        num_frames: int,
        scale: int = 4,
        degradation: str = "bicubic",
        blur_sigma: float = 1.6,
        frames_per_clip: int | None = None,
        crop: int | None = None,
        full_windows: bool = False,
        lr_clips: Sequence[Clip] | None = None,
    ) -> None:
        _check_degradation(scale, degradation)
        self.clips = list(clips)
        self.lr_clips = _checked_lr(self.clips, lr_clips, scale)
        self.num_frames = num_frames
        self.scale = scale
        self.degradation = degradation
        self.blur_sigma = blur_sigma
        self.crop = crop
        self.items: list[tuple[int, int]] = []
        half = num_frames // 2
        for k, clip in enumerate(self.clips):
            n = len(clip)
            lo, hi = (half, n - 1 - half) if full_windows and n >= num_frames else (0, n - 1)
            count = hi - lo + 1
            if frames_per_clip is not None and frames_per_clip < count:
                centres = np.linspace(lo, hi, frames_per_clip).round().astype(int)
            else:
                centres = range(lo, hi + 1)
            self.items.extend((k, int(c)) for c in centres)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, centre = self.items[index]
        clip = self.clips[k]
        window = _window(centre, self.num_frames, len(clip))
        hr = clip.frames(window)
        s = self.scale
        h, w = hr.shape[-2:]
        h, w = h - h % s, w - w % s
        top = left = 0
        if self.crop is not None:
            # On the scale grid, so that a provided LR frame crops to the same region.
            ch, cw = min(h, self.crop) // s * s, min(w, self.crop) // s * s
            top, left = (h - ch) // 2 // s * s, (w - cw) // 2 // s * s
            h, w = ch, cw
        hr = hr[..., top : top + h, left : left + w]
        if self.lr_clips is None:
            lr = degrade(hr, s, self.degradation, self.blur_sigma)
        else:
            lr = self.lr_clips[k].frames(window)[..., top // s : (top + h) // s, left // s : (left + w) // s]
        return {"lr": lr, "hr": hr}
