"""Reading frames from a folder or a video file, and writing them back, without half-written output.

Frames travel as ``(H, W, 3)`` ``uint8`` RGB numpy arrays. Folders hold images (png, jpg, bmp, tif, webp) in
natural sort order (``f2.png`` before ``f10.png``); video files are decoded and encoded with PyAV (the
``video`` extra: ``pip install av``). Greyscale, palette, RGBA and 16-bit frames are converted to 8-bit RGB
with a warning.

Writers put everything under a partial name beside the destination (:mod:`reference_models.io.partial_output`)
and move it into place only when :meth:`close` succeeds; :meth:`abort` (also called on an exception or an
interrupt inside a ``with`` block) removes it. A video written from a video keeps its time base, frame
timestamps and audio and subtitle streams.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from reference_models.io.partial_output import (
    create_partial_dir,
    create_partial_file,
    remove_partial,
    remove_stale_partials,
    signals_deferred,
    stale_partials,
)

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
    "CRF_CODECS",
    "DEFAULT_CRF",
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


def _warn_once(warned: set[str], kind: str, message: str) -> None:
    if kind not in warned:
        warned.add(kind)
        warnings.warn(message, stacklevel=4)


SIXTEEN_BIT_WARNING = "16-bit frames are reduced to 8 bits"


def _to_rgb8(array: np.ndarray, what: str, warned: set[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 from greyscale/RGBA/16-bit arrays, warning once per kind of conversion."""

    def warn(kind: str, message: str) -> None:
        _warn_once(warned, kind, f"{what}: {message}")

    if (array.dtype.kind == "u" and array.dtype.itemsize == 2) or array.dtype == np.int32:
        # 16 bits of either byte order (TIFF "I;16B" reads as big-endian ">u2"), or Pillow's 32-bit "I" mode.
        warn("16bit", SIXTEEN_BIT_WARNING)
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
        self._warned: set[str] = set()  # each kind of conversion is warned about once per source
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
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
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
        for index in range(len(self.paths)):
            yield self[index]

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index``, read from its file now (random access: what whole-sequence recurrent runs use)."""
        path = self.paths[index]
        warned = self._warned
        try:
            with Image.open(path) as img:
                # Pillow reads 16-bit RGB(A) as 8-bit modes; the raw mode of the undecoded tiles tells.
                if img.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in img.tile):
                    _warn_once(warned, "16bit", f"'{self.folder}': {SIXTEEN_BIT_WARNING}")
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    img = img.convert("RGB")
                array = np.array(img)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise VideoIOError(f"cannot read frame '{path}': {exc}") from exc
        return _to_rgb8(array, f"'{self.folder}'", warned)


class VideoSource(FrameSource):
    """The frames of the first video stream of a file, decoded with PyAV.

    Attributes:
        time_base: the video stream's time base (``None`` if the container gives none).
        pts: every frame's timestamp in ``time_base`` units, in display order (``None`` if some are missing).
        side_streams: how many audio and subtitle streams the file has.
    """

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
                self.time_base = Fraction(stream.time_base) if stream.time_base else None
                self.side_streams = len(container.streams.audio) + len(container.streams.subtitles)
                # Count frames by demuxing (no decoding): container metadata is missing or wrong too often.
                stamps = [packet.pts for packet in container.demux(stream) if packet.size]
                count = len(stamps)
        except av.error.FFmpegError as exc:
            raise VideoIOError(f"cannot read video '{self.path}': {exc}") from exc
        if count == 0:
            raise VideoIOError(f"video '{self.path}' has no frames")
        self.names = [f"{i:08d}.png" for i in range(count)]
        known = self.time_base is not None and None not in stamps and len(set(stamps)) == count
        self.pts = sorted(stamps) if known else None

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
    """Writes ``(H, W, 3)`` uint8 RGB frames under a partial name; :meth:`close` moves them into place."""

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
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise


def _complete_png(path: Path, size: tuple[int, int]) -> bool:
    """Whether ``path`` is a PNG of ``(height, width)`` whose pixel data decodes to the end."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG" or img.size != (size[1], size[0]):
                return False
            img.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError):
        return False
    return True


class FolderWriter(FrameWriter):
    """PNG frames into ``folder``: written to a partial sibling folder, moved in by :meth:`close`.

    Frames already in ``folder`` with other names are kept; frames with the same names are replaced. Given
    ``names`` (the frames that will be written), a name that is taken by a folder is refused up front, so
    that a run never stops half-way through moving frames in. Stale partials of ``folder`` (left by a killed
    run) are removed, or, with ``resume_size``, resumed from.

    Args:
        folder: the output folder.
        compress_level: PNG compression (1: fast).
        names: the frame names that will be written, checked up front.
        resume_size: ``(height, width)`` of the output frames: the names in :attr:`done` (complete PNGs of
            that size in ``folder`` or in the newest stale partial) need not be written again, and an
            aborted writer keeps its partial folder for the next resume.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        compress_level: int = 1,
        *,
        names: list[str] | None = None,
        resume_size: tuple[int, int] | None = None,
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise VideoIOError(f"output '{self.folder}' exists and is not a folder")
        self._check_targets(names or [])
        self.compress_level = compress_level
        self.keep_on_abort = resume_size is not None
        self.names: list[str] = []
        self.done: set[str] = set()
        stale = stale_partials(self.folder)
        adopted = next((p for p in stale if p.is_dir()), None) if resume_size is not None else None
        for path in stale:
            if path != adopted:
                remove_partial(path)
        try:
            self.tmp = create_partial_dir(self.folder)
        except OSError as exc:
            raise VideoIOError(f"cannot write to '{self.folder.parent}': {exc}") from exc
        if resume_size is not None:
            for name in names or []:
                if adopted is not None and _complete_png(adopted / name, resume_size):
                    os.replace(adopted / name, self.tmp / name)
                    self.names.append(name)
                    self.done.add(name)
                elif _complete_png(self.folder / name, resume_size):
                    self.done.add(name)
            if adopted is not None:
                shutil.rmtree(adopted, ignore_errors=True)

    def _check_targets(self, names: list[str]) -> None:
        for name in names:
            target = self.folder / name
            if target.is_dir():
                raise VideoIOError(f"cannot write frame '{target}': a folder has that name")

    def write(self, name: str, frame: np.ndarray) -> None:
        # Our own file object, closed even when an interrupt arrives inside Pillow's encoder.
        with open(self.tmp / name, "wb") as file:
            Image.fromarray(frame).save(file, format="PNG", compress_level=self.compress_level)
        self.names.append(name)

    def close(self) -> None:
        if not self.folder.exists():
            os.replace(self.tmp, self.folder)
            return
        self._check_targets(self.names)
        with signals_deferred():
            for name in self.names:
                os.replace(self.tmp / name, self.folder / name)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        if not (self.keep_on_abort and self.names):
            shutil.rmtree(self.tmp, ignore_errors=True)


# Encoders that take a constant-rate-factor quality setting, and the range of it.
CRF_CODECS = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libaom-av1": 63, "libsvtav1": 63}
DEFAULT_CRF = 17


class VideoWriter(FrameWriter):
    """A video file encoded with PyAV, written to a partial sibling file and renamed by :meth:`close`.

    Audio and subtitle streams of ``copy_from`` (the input video) are copied into it packet by packet,
    interleaved with the video by time; an audio codec the output container cannot hold is re-encoded to the
    container's default audio codec, a subtitle codec it cannot hold is dropped (both with a warning).

    Args:
        path: the output file; its extension picks the container.
        fps: frame rate, used when ``pts`` is not given (frame ``i`` at ``i / fps``).
        codec: video encoder (default: libx264 where available, else mpeg4).
        crf: quality of the encoders in :data:`CRF_CODECS` (default 17 for those; lower is better).
        pix_fmt: pixel format of the encoded video (default yuv420p, yuv444p for odd frame sizes).
        time_base: the input video's time base, kept exactly.
        pts: the input video's frame timestamps, kept exactly.
        copy_from: a video whose audio and subtitle streams are copied (``None``: video only).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: Fraction = DEFAULT_FPS,
        *,
        codec: str | None = None,
        crf: int | None = None,
        pix_fmt: str | None = None,
        time_base: Fraction | None = None,
        pts: list[int] | None = None,
        copy_from: str | os.PathLike[str] | None = None,
    ) -> None:
        self.av = _import_av()
        self.path = Path(path)
        if self.path.is_dir():
            raise VideoIOError(f"output '{self.path}' is a folder; name a video file or use a folder output")
        self.codec = codec or ("libx264" if "libx264" in self.av.codecs_available else "mpeg4")
        self._check_options(crf, pix_fmt)
        self.crf = DEFAULT_CRF if crf is None and self.codec in CRF_CODECS else crf
        self.pix_fmt = pix_fmt
        self.fps = fps
        # AVI has no timestamps, only a clock of one tick per frame: it keeps the frame rate, not the times.
        timed = time_base is not None and pts is not None and self.path.suffix.lower() != ".avi"
        self.time_base = time_base if timed else None
        self.pts = pts if timed else None
        self.copy_from = copy_from
        remove_stale_partials(self.path, self.path.suffix)
        try:
            self.tmp = create_partial_file(self.path)
        except OSError as exc:
            raise VideoIOError(f"cannot write to '{self.path.parent}': {exc}") from exc
        self.container: Any = None
        self.stream: Any = None
        self.source: Any = None
        self.frames = 0

    def _check_options(self, crf: int | None, pix_fmt: str | None) -> None:
        try:
            codec = self.av.Codec(self.codec, "w")
        except ValueError as exc:  # PyAV's UnknownCodecError
            raise VideoIOError(f"--codec {self.codec}: no such video encoder in this FFmpeg build") from exc
        if codec.type != "video":
            raise VideoIOError(f"--codec {self.codec}: a {codec.type} encoder, not a video encoder")
        formats = [f.name for f in codec.video_formats or []]
        if pix_fmt is not None and formats and pix_fmt not in formats:
            raise VideoIOError(f"--pix-fmt {pix_fmt}: {self.codec} takes {', '.join(formats)}")
        if crf is not None:
            if self.codec not in CRF_CODECS:
                raise VideoIOError(f"--crf applies to {', '.join(CRF_CODECS)}, not {self.codec}")
            if not 0 <= crf <= CRF_CODECS[self.codec]:
                raise VideoIOError(f"--crf for {self.codec} must be in [0, {CRF_CODECS[self.codec]}], got {crf}")

    def _open(self, height: int, width: int) -> None:
        av = self.av
        self.container = av.open(str(self.tmp), mode="w")
        self.stream = self.container.add_stream(self.codec, rate=self.fps)
        self.stream.height, self.stream.width = height, width
        even = height % 2 == 0 and width % 2 == 0
        self.stream.pix_fmt = self.pix_fmt or ("yuv420p" if even or self.codec == "mpeg4" else "yuv444p")
        self.stream.time_base = self.stream.codec_context.time_base = self.time_base or 1 / self.fps
        if self.crf is not None:
            self.stream.options = {"crf": str(self.crf), **({"b": "0"} if self.codec == "libvpx-vp9" else {})}
        if self.copy_from is not None:
            self._add_side_streams()

    def _add_side_streams(self) -> None:
        """Output streams for the audio and subtitle streams of :attr:`copy_from`; starts their demuxer."""
        self.source = self.av.open(str(self.copy_from))
        self.side: dict[int, tuple[Any, bool]] = {}  # input index: (output stream, re-encode)
        what = f"'{self.copy_from}'"
        for stream in self.source.streams:
            if stream.type not in ("audio", "subtitle"):
                continue
            name = stream.codec_context.name
            if name in self.container.supported_codecs:
                self.side[stream.index] = (self.container.add_stream_from_template(stream), False)
            elif stream.type == "audio":
                codec = self.container.default_audio_codec
                out = self.container.add_stream(codec, rate=stream.codec_context.sample_rate)
                # FFmpeg's default layout for the channel count ("1c": mono): encoders refuse an unordered one.
                out.layout = f"{stream.codec_context.layout.nb_channels}c"
                self.side[stream.index] = (out, True)
                warnings.warn(
                    f"{what}: audio stream {stream.index} ({name}) cannot go into {self.path.suffix} as it is: "
                    f"re-encoded to {codec}",
                    stacklevel=4,
                )
            else:
                warnings.warn(
                    f"{what}: subtitle stream {stream.index} ({name}) cannot go into {self.path.suffix}: dropped "
                    "(an .mkv output keeps it)",
                    stacklevel=4,
                )
        streams = [self.source.streams[i] for i in self.side]
        self.packets = iter(self.source.demux(*streams)) if streams else iter(())
        self.next_packet = None

    def _mux_side(self, until: float) -> None:
        """Mux the copied streams' packets that start before ``until`` seconds."""
        if self.source is None:
            return
        while True:
            if self.next_packet is None:
                self.next_packet = next(self.packets, None)
                if self.next_packet is None:
                    return
            packet = self.next_packet
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None and float(stamp * packet.time_base) > until:
                return
            self.next_packet = None
            if packet.size == 0:
                continue
            out, reencode = self.side[packet.stream.index]
            if reencode:
                for frame in packet.decode():
                    self.container.mux(out.encode(frame))
            else:
                packet.stream = out
                self.container.mux(packet)

    def write(self, name: str, frame: np.ndarray) -> None:
        if self.container is None:
            self._open(*frame.shape[:2])
        if self.pts is not None and self.frames >= len(self.pts):
            raise VideoIOError(f"more frames than the {len(self.pts)} timestamps of the input video")
        video_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.pts[self.frames] if self.pts is not None else self.frames
        video_frame.time_base = self.stream.codec_context.time_base
        self.frames += 1
        self.container.mux(self.stream.encode(video_frame))
        self._mux_side(float(video_frame.pts * video_frame.time_base))

    def close(self) -> None:
        if self.container is None:
            self.abort()
            raise VideoIOError(f"no frames to write to '{self.path}'")
        try:
            self.container.mux(self.stream.encode())
            self._mux_side(math.inf)
            if self.source is not None:
                for out, reencode in self.side.values():
                    if reencode:
                        self.container.mux(out.encode())
            self.container.close()
        except self.av.error.FFmpegError as exc:
            self.abort()
            raise VideoIOError(f"cannot write video '{self.path}': {exc}") from exc
        self._close_source()
        if self.path.is_dir():
            self.abort()
            raise VideoIOError(f"output '{self.path}' is a folder; name a video file or use a folder output")
        os.replace(self.tmp, self.path)

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # the file is deleted next; a broken encoder state must not mask the real error
                pass
        self._close_source()
        self.tmp.unlink(missing_ok=True)


def open_writer(
    path: str | os.PathLike[str],
    fps: Fraction = DEFAULT_FPS,
    *,
    names: list[str] | None = None,
    resume_size: tuple[int, int] | None = None,
    **video_options: Any,
) -> FrameWriter:
    """A :class:`VideoWriter` (with ``video_options``) when ``path`` has a video extension, else a
    :class:`FolderWriter` (with ``names`` and ``resume_size``)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        if resume_size is not None:
            raise VideoIOError("--resume needs a folder output; a video is written in one go")
        return VideoWriter(path, fps=fps, **video_options)
    return FolderWriter(path, names=names, resume_size=resume_size)
