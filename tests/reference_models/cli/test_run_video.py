"""``run`` into a video: the time base, frame timestamps and audio and subtitle streams of the input stay."""

from fractions import Fraction

import numpy as np
import pytest

from reference_models.cli import main

av = pytest.importorskip("av")


def write_clip(path, video_codec="libx264", audio_codec="aac", frames=5, fps=Fraction(30000, 1001), rate=8000):
    """A 16x12 clip with a mono sine audio track as long as the video."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = 16, 12, "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate, layout="mono")
        for _ in range(frames):
            image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        total, done = int(rate * frames / fps), 0
        while done < total:
            n = min(1024, total - done)
            tone = (3000 * np.sin(np.arange(done, done + n) * 0.05)).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, done
            container.mux(audio.encode(frame))
            done += n
        container.mux(audio.encode())
    return path


def describe(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {
            "rate": video.average_rate,
            "time_base": video.time_base,
            "audio": [s.codec_context.name for s in container.streams.audio],
        }
        frames = list(container.decode(video=0))
        info["pts"] = [f.pts for f in frames]
        info["size"] = (frames[0].height, frames[0].width)
    if info["audio"]:
        with av.open(str(path)) as container:
            decoded = list(container.decode(audio=0))
            info["samples"] = sum(f.samples for f in decoded)
            info["audio_rate"] = decoded[0].sample_rate
    return info


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("suffix, audio_codec", [(".mp4", "aac"), (".mkv", "pcm_s16le")])
def test_audio_and_timing_are_kept(tmp_path, capsys, checkpoint, suffix, audio_codec):
    source = write_clip(tmp_path / f"in{suffix}", audio_codec=audio_codec)
    out = tmp_path / f"out{suffix}"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", out, "-q")
    assert code == 0, err
    before, after = describe(source), describe(out)
    assert after["size"] == (48, 64)
    assert after["audio"] == before["audio"] == [audio_codec]
    assert after["samples"] == before["samples"] > 0
    for key in ("rate", "time_base", "pts"):
        assert after[key] == before[key], key
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, out.name])


def test_no_audio_crf_codec_and_pix_fmt(tmp_path, capsys, checkpoint):
    source = write_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.mkv"
    argv = ["--codec", "libx264", "--crf", "30", "--pix-fmt", "yuv444p", "--no-audio"]
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", out, "-q", *argv)
    assert code == 0, err
    with av.open(str(out)) as container:
        assert not container.streams.audio
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv444p"
    # A lower CRF spends more bits on the same frames.
    best = tmp_path / "best.mkv"
    code, err = run(
        capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", best, "-q", *argv[:2], "--crf", "0", "--no-audio"
    )
    assert code == 0, err
    assert best.stat().st_size > out.stat().st_size


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, capsys, checkpoint):
    """PCM audio cannot go into WebM: it is re-encoded to the container's default (Opus, 48 kHz), same length."""
    source = write_clip(tmp_path / "in.mkv", audio_codec="pcm_s16le")
    out = tmp_path / "out.webm"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", out, "-q", "--codec", "libvpx-vp9")
    assert code == 0, err
    assert "audio stream 1 (pcm_s16le) cannot go into .webm as it is: re-encoded to opus" in err
    before, after = describe(source), describe(out)
    assert after["audio"] == ["opus"] and after["audio_rate"] == 48000
    assert after["samples"] == before["samples"] * 48000 // 8000
    assert after["pts"] == before["pts"]


def test_fps_option_retimes_the_video(tmp_path, capsys, checkpoint):
    source = write_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", out, "-q", "--fps", "0.5")
    assert code == 0, err
    assert "--fps changes the video's duration" in err
    info = describe(out)
    assert info["rate"] == Fraction(1, 2)
    assert [float(p * info["time_base"]) for p in info["pts"]] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_avi_keeps_the_frame_rate(tmp_path, capsys, checkpoint):
    """AVI has no timestamps (one clock tick per frame): the output runs at the input's rate, every frame."""
    source = write_clip(tmp_path / "in.mkv", audio_codec="pcm_s16le")
    out = tmp_path / "out.avi"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", out, "-q")
    assert code == 0, err
    info = describe(out)
    assert info["rate"] == Fraction(30000, 1001) and len(info["pts"]) == 5
    assert info["samples"] == describe(source)["samples"]


def test_subtitles_are_copied_or_dropped_with_a_warning(tmp_path, capsys, checkpoint):
    source = tmp_path / "in.mkv"
    with av.open(str(source), "w") as container:
        video = container.add_stream("ffv1", rate=10)
        video.width, video.height, video.pix_fmt = 8, 8, "yuv420p"
        text = container.add_mux_stream("subrip", time_base=Fraction(1, 1000))
        for _ in range(3):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")))
        container.mux(video.encode())
        packet = av.Packet(b"hello")
        packet.stream, packet.pts, packet.dts, packet.duration = text, 100, 100, 100
        packet.time_base = Fraction(1, 1000)
        container.mux(packet)
    kept = tmp_path / "out.mkv"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", kept, "-q")
    assert code == 0 and err == "", err
    with av.open(str(kept)) as container:
        assert [bytes(p) for p in container.demux(container.streams.subtitles[0]) if p.size] == [b"hello"]
    dropped = tmp_path / "out.mp4"
    code, err = run(capsys, "run", "--checkpoint", checkpoint, "-i", source, "-o", dropped, "-q")
    assert code == 0 and "subtitle stream 1" in err and "dropped (an .mkv output keeps it)" in err, err
    with av.open(str(dropped)) as container:
        assert not container.streams.subtitles
