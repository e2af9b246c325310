import warnings
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from reference_models.io.video import (
    FolderWriter,
    VideoIOError,
    VideoSource,
    VideoWriter,
    natural_key,
    open_frames,
    open_writer,
)
from tests.reference_models.helpers import random_frames, write_folder, write_video


def test_natural_order():
    names = ["f10.png", "F2.png", "f1.png", "f1a.png", "f100.png"]
    assert sorted(names, key=natural_key) == ["f1.png", "f1a.png", "F2.png", "f10.png", "f100.png"]


def test_folder_round_trip_is_exact(tmp_path):
    frames = random_frames(3, 5, 7)
    source = open_frames(write_folder(tmp_path / "in", frames))
    assert (len(source), source.height, source.width) == (3, 5, 7)
    for got, exp in zip(source, frames):
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize(
    "image, expected, warning",
    [
        (Image.fromarray(np.full((4, 4), 7, np.uint8), mode="L"), 7, "greyscale"),
        (Image.fromarray(np.full((4, 4), 257 * 9, np.uint16)), 9, "16-bit"),
        (Image.fromarray(np.full((4, 4, 2), 5, np.uint8), mode="LA"), 5, "alpha"),
        (Image.fromarray(np.full((4, 4, 3), 51, np.uint8)).convert("P"), 51, None),
    ],
)
def test_frames_are_converted_to_rgb8(tmp_path, image, expected, warning):
    folder = tmp_path / "in"
    folder.mkdir()
    image.save(folder / "0.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (frame,) = list(open_frames(folder))
    assert frame.shape == (4, 4, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, expected)
    messages = [str(w.message) for w in caught]
    assert (warning is None and not messages) or any(warning in m for m in messages)


def test_video_source_counts_frames_and_keeps_fps(tmp_path):
    frames = random_frames(5, 6, 10, seed=2)
    source = VideoSource(write_video(tmp_path / "v.mkv", frames, fps=12))
    assert len(source) == 5 and source.fps == Fraction(12) and (source.height, source.width) == (6, 10)
    assert source.names[0] == "00000000.png"
    for got, exp in zip(source, frames):
        np.testing.assert_array_equal(got, exp)


def test_video_writer_odd_size_and_atomic_rename(tmp_path):
    path = tmp_path / "o.mp4"
    with open_writer(path, fps=Fraction(10)) as writer:
        assert isinstance(writer, VideoWriter)
        for frame in random_frames(3, 9, 11):
            writer.write("x", frame)
        assert not path.exists()
    source = open_frames(path)
    assert len(source) == 3 and (source.height, source.width) == (9, 11)


def test_writers_abort_on_error(tmp_path):
    for path in (tmp_path / "frames", tmp_path / "v.mkv"):
        with pytest.raises(RuntimeError):
            with open_writer(path) as writer:
                writer.write("a.png", random_frames(1, 4, 4)[0])
                raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_empty_video_is_an_error_and_leaves_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "v.mp4")
    with pytest.raises(VideoIOError, match="no frames"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_folder_writer_refuses_a_file_as_output(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(VideoIOError, match="not a folder"):
        FolderWriter(tmp_path / "f")


def test_name_collisions_are_refused(tmp_path):
    folder = write_folder(tmp_path / "in", random_frames(2, 4, 4), names=["a.png", "a.jpg"])
    with pytest.raises(VideoIOError, match="would both be written as 'a.png'"):
        open_frames(folder)
