"""Reading frames from a folder or a video file, and writing them back, without half-written output.

Frames travel as ``(H, W, 3)`` ``uint8`` RGB numpy arrays. Folders hold images (png, jpg, bmp, tif, webp) in
natural sort order (``f2.png`` before ``f10.png``); video files are decoded and encoded with PyAV (the
``video`` extra: ``pip install av``). Greyscale, palette, RGBA and 16-bit frames are converted to 8-bit RGB
with a warning.

Writers put everything under a temporary name beside the destination and move it into place only when
:meth:`close` succeeds; :meth:`abort` (also called on an exception inside a ``with`` block) removes it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoIOError",
    "FrameSource",
    "FolderSource",
    "VideoSource",
    "open_frames",
    "FrameWriter",
    "FolderWriter",
    "VideoWriter",
    "open_writer",
    "natural_key",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v"})
DEFAULT_FPS = Fraction(25)


class VideoIOError(ValueError):
    """An input that cannot be read, or an output that cannot be written."""


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders embedded numbers by value: ``f2.png`` < ``f10.png``.

    Examples:
        >>> sorted(["f10.png", "f2.png", "f1.png"], key=natural_key)
        ['f1.png', 'f2.png', 'f10.png']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise VideoIOError("video files need PyAV: pip install av (or pip install -e '.[video]')") from exc
    return av


def _to_rgb8(array: np.ndarray, what: str, warned: set[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 from greyscale/RGBA/16-bit arrays, warning once per kind of conversion."""

    def warn(kind: str, message: str) -> None:
        if kind not in warned:
            warned.add(kind)
            warnings.warn(f"{what}: {message}", stacklevel=4)

    if array.dtype == np.uint16 or array.dtype == np.int32:
        warn("16bit", "16-bit frames are reduced to 8 bits")
        array = np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise VideoIOError(f"{what}: unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        warn("grey", "greyscale frames are converted to RGB")
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (2, 4):
        warn("alpha", "the alpha channel is dropped")
        array = array[:, :, :1].repeat(3, axis=2) if array.shape[2] == 2 else array[:, :, :3]
    elif not (array.ndim == 3 and array.shape[2] == 3):
        raise VideoIOError(f"{what}: unsupported frame layout {array.shape}")
    return np.ascontiguousarray(array)


class FrameSource(ABC):
    """Frames of a clip, in order: iterate for ``(H, W, 3)`` uint8 RGB arrays.

    Attributes:
        names: the output file name (``.png``) of every frame.
        fps: frame rate for a video written from these frames.
        height, width: frame size.
    """

    names: list[str]
    fps: Fraction
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def __iter__(self) -> Iterator[np.ndarray]: ...


class FolderSource(FrameSource):
    """The images of a folder in natural sort order; every frame must have the size of the first."""

    def __init__(self, folder: str | os.PathLike[str], fps: Fraction = DEFAULT_FPS) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.paths = sorted(
            (p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: natural_key(p.name),
        )
        if not self.paths:
            raise VideoIOError(
                f"no frames in folder '{self.folder}' (expected {', '.join(sorted(IMAGE_EXTENSIONS))} files)"
            )
        self.names = [p.stem + ".png" for p in self.paths]
        seen: dict[str, Path] = {}
        for path, name in zip(self.paths, self.names):
            if name in seen:
                raise VideoIOError(f"frames '{seen[name].name}' and '{path.name}' would both be written as '{name}'")
            seen[name] = path
        # Image.open only parses the header: cheap, and it catches unreadable files and odd sizes up front.
        sizes = {}
        for path in self.paths:
            try:
                with Image.open(path) as img:
                    sizes[path] = img.size
            except (OSError, UnidentifiedImageError) as exc:
                raise VideoIOError(f"cannot read frame '{path}': {exc}") from exc
        self.width, self.height = sizes[self.paths[0]]
        for path in self.paths[1:]:
            if sizes[path] != (self.width, self.height):
                w, h = sizes[path]
                raise VideoIOError(
                    f"frame '{path.name}' is {w}x{h} but '{self.paths[0].name}' is {self.width}x{self.height} "
                    "(all frames of a clip must have the same size)"
                )

    def __iter__(self) -> Iterator[np.ndarray]:
        warned: set[str] = set()
        for path in self.paths:
            try:
                with Image.open(path) as img:
                    if img.mode == "P":
                        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                        img = img.convert("RGB")
                    array = np.array(img)
            except (OSError, UnidentifiedImageError) as exc:
                raise VideoIOError(f"cannot read frame '{path}': {exc}") from exc
            yield _to_rgb8(array, f"'{self.folder}'", warned)


class VideoSource(FrameSource):
    """The frames of the first video stream of a file, decoded with PyAV."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        av = _import_av()
        self.path = Path(path)
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoIOError(f"'{self.path}' has no video stream")
                stream = container.streams.video[0]
                self.fps = Fraction(stream.average_rate) if stream.average_rate else DEFAULT_FPS
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                # Count frames by demuxing (no decoding): container metadata is missing or wrong too often.
                count = sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as exc:
            raise VideoIOError(f"cannot read video '{self.path}': {exc}") from exc
        if count == 0:
            raise VideoIOError(f"video '{self.path}' has no frames")
        self.names = [f"{i:08d}.png" for i in range(count)]

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _import_av()
        warned: set[str] = set()
        decoded = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    if decoded == len(self.names):
                        break
                    decoded += 1
                    fmt = frame.format.name
                    if fmt.startswith(("gray", "ya")) and "gray" not in warned:
                        warned.add("gray")
                        warnings.warn(f"'{self.path}': greyscale video is converted to RGB", stacklevel=2)
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise VideoIOError(f"cannot decode video '{self.path}': {exc}") from exc
        if decoded != len(self.names):
            raise VideoIOError(f"video '{self.path}': decoded {decoded} frames, expected {len(self.names)}")


def open_frames(path: str | os.PathLike[str]) -> FrameSource:
    """A :class:`FolderSource` for a folder, a :class:`VideoSource` for a video file.

    Raises:
        VideoIOError: the path does not exist, is an empty folder, or cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise VideoIOError(f"input '{path}' does not exist")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoIOError(f"input '{path}' is a single image; pass the folder that holds the frames")
    return VideoSource(path)


class FrameWriter(ABC):
    """Writes ``(H, W, 3)`` uint8 RGB frames under a temporary name; :meth:`close` moves them into place."""

    @abstractmethod
    def write(self, name: str, frame: np.ndarray) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FolderWriter(FrameWriter):
    """PNG frames into ``folder``: written to a hidden sibling folder, moved in by :meth:`close`.

    Frames already in ``folder`` with other names are kept; frames with the same names are replaced.
    """

    def __init__(self, folder: str | os.PathLike[str], compress_level: int = 1) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise VideoIOError(f"output '{self.folder}' exists and is not a folder")
        parent = self.folder.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.partial-", dir=parent))
        except OSError as exc:
            raise VideoIOError(f"cannot write to '{parent}': {exc}") from exc
        self.compress_level = compress_level
        self.names: list[str] = []

    def write(self, name: str, frame: np.ndarray) -> None:
        Image.fromarray(frame).save(self.tmp / name, compress_level=self.compress_level)
        self.names.append(name)

    def close(self) -> None:
        if not self.folder.exists():
            os.replace(self.tmp, self.folder)
            return
        for name in self.names:
            os.replace(self.tmp / name, self.folder / name)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class VideoWriter(FrameWriter):
    """A video file encoded with PyAV (H.264 with CRF ``crf`` where available, else MPEG-4), written to a
    hidden sibling file and renamed by :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], fps: Fraction = DEFAULT_FPS, crf: int = 17) -> None:
        self.av = _import_av()
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(
                prefix=f".{self.path.stem}.partial-", suffix=self.path.suffix, dir=self.path.parent
            )
            os.close(handle)
        except OSError as exc:
            raise VideoIOError(f"cannot write to '{self.path.parent}': {exc}") from exc
        self.tmp = Path(tmp)
        self.fps = fps
        self.crf = crf
        self.container = None
        self.stream = None

    def _open(self, height: int, width: int) -> None:
        av = self.av
        self.container = av.open(str(self.tmp), mode="w")
        h264 = "libx264" in av.codecs_available
        self.stream = self.container.add_stream("libx264" if h264 else "mpeg4", rate=self.fps)
        self.stream.height, self.stream.width = height, width
        even = height % 2 == 0 and width % 2 == 0
        self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
        if h264:
            self.stream.options = {"crf": str(self.crf)}

    def write(self, name: str, frame: np.ndarray) -> None:
        if self.container is None:
            self._open(*frame.shape[:2])
        video_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            self.abort()
            raise VideoIOError(f"no frames to write to '{self.path}'")
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # the file is deleted next; a broken encoder state must not mask the real error
                pass
        self.tmp.unlink(missing_ok=True)


def open_writer(path: str | os.PathLike[str], fps: Fraction = DEFAULT_FPS) -> FrameWriter:
    """A :class:`VideoWriter` when ``path`` has a video extension, else a :class:`FolderWriter`."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoWriter(path, fps=fps)
    return FolderWriter(path)
