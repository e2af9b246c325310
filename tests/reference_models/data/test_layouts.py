"""Each dataset layout parsed from a small synthetic tree, including its error cases."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference_models.data import DatasetError, TrainClips, ValClips, open_dataset, reds, vid4, vimeo90k


def write_clip(folder: Path, frames: int, height: int, width: int, seed: int = 0, names: str = "{:03d}.png") -> None:
    """``frames`` random RGB PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / names.format(i + 1))


def write_vid4(root: Path, clips=("calendar", "city"), frames: int = 3, lr: str | None = "BIx4") -> Path:
    for k, name in enumerate(clips):
        write_clip(root / "GT" / name, frames, 16, 20, seed=k)
        if lr:
            write_clip(root / lr / name, frames, 4, 5, seed=10 + k)
    return root


def test_vid4_with_and_without_provided_lr(tmp_path):
    write_vid4(tmp_path)
    bi = vid4(tmp_path, "bi")
    assert [c.name for c in bi.hr] == ["calendar", "city"] and bi.lr is not None
    assert [len(c) for c in bi.lr] == [3, 3] and bi.lr[0].frame_size == (4, 5)
    assert "provided" in bi.describe_lr("bi") and "BIx4" in bi.describe_lr("bi")
    bd = vid4(tmp_path, "bd")  # no BDx4 tree: generated
    assert bd.lr is None and "generated" in bd.describe_lr("bd") and "BD" in bd.describe_lr("bd")


def test_vid4_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"GT.* is missing"):
        vid4(tmp_path)
    write_vid4(tmp_path, frames=3)
    (tmp_path / "BIx4" / "city" / "003.png").unlink()
    with pytest.raises(DatasetError, match=r"clip 'city': 3 GT frames .* but 2 LR frames"):
        vid4(tmp_path)
    write_clip(tmp_path / "BIx4" / "city", 3, 4, 5)
    write_clip(tmp_path / "GT" / "walk", 3, 16, 20)
    with pytest.raises(DatasetError, match=r"BIx4/walk' is missing"):
        vid4(tmp_path)


def test_vid4_lr_of_the_wrong_size(tmp_path):
    write_clip(tmp_path / "GT" / "a", 2, 16, 20)
    write_clip(tmp_path / "BIx4" / "a", 2, 8, 10)
    with pytest.raises(DatasetError, match="LR frames are 10x8"):
        vid4(tmp_path)


def test_reds_splits_leave_reds4_out_of_training(tmp_path):
    for name in ("000", "001", "011", "015", "020"):
        write_clip(tmp_path / "train_sharp" / name, 2, 16, 16)
        write_clip(tmp_path / "train_sharp_bicubic" / "X4" / name, 2, 4, 4)
    train = reds(tmp_path, "train")
    assert [c.name for c in train.hr] == ["001"] and [c.name for c in train.lr] == ["001"]
    assert [c.name for c in reds(tmp_path, "train", include_reds4=True).hr] == ["000", "001", "011", "015", "020"]
    test = open_dataset("reds4", tmp_path, cache_bytes=0)
    assert test.name == "reds4" and [c.name for c in test.hr] == ["000", "011", "015", "020"]
    assert reds(tmp_path, "reds4", degradation="bd").lr is None  # REDS provides bicubic LR only
    with pytest.raises(DatasetError, match="val_sharp' is missing"):
        reds(tmp_path, "val")
    (tmp_path / "train_sharp" / "015" / "001.png").unlink()
    (tmp_path / "train_sharp" / "015" / "002.png").unlink()
    with pytest.raises(DatasetError, match="REDS4 clip.* 015 missing"):
        reds(tmp_path, "reds4")


def write_vimeo(root: Path, entries=("00001/0001", "00001/0002"), listed=None, lr: bool = True) -> Path:
    for k, entry in enumerate(entries):
        write_clip(root / "sequences" / entry, 7, 16, 16, seed=k, names="im{}.png")
        if lr:
            write_clip(root / "BIx4" / entry, 7, 4, 4, seed=k, names="im{}.png")
    (root / "sep_testlist.txt").write_text("\n".join(listed or entries) + "\n")
    (root / "sep_trainlist.txt").write_text(entries[0] + "\n")
    return root


def test_vimeo90k_septuplets(tmp_path):
    write_vimeo(tmp_path)
    test = vimeo90k(tmp_path, "test")
    assert test.name == "vimeo90k-t" and test.centre_only
    assert [c.name for c in test.hr] == ["00001/0001", "00001/0002"] and len(test.hr[0]) == 7
    assert test.lr is not None and test.lr[1].frame_size == (4, 4)
    assert test.hr[0].paths[3].name == "im4.png"
    train = open_dataset("vimeo90k", tmp_path, degradation="bd")
    assert not train.centre_only and train.lr is None and len(train.hr) == 1


def test_vimeo90k_errors(tmp_path):
    with pytest.raises(DatasetError, match="sep_testlist.txt' is missing"):
        vimeo90k(tmp_path)
    write_vimeo(tmp_path, listed=["00001/0001", "00002/0007"])
    with pytest.raises(DatasetError, match=r"00002/0007' is missing: GT septuplet"):
        vimeo90k(tmp_path)


def test_folder_and_unknown_names(tmp_path):
    write_clip(tmp_path / "a", 2, 16, 16)
    data = open_dataset("folder", tmp_path)
    assert data.lr is None and [c.name for c in data.hr] == ["a"]
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("div2k", tmp_path)
    with pytest.raises(FileNotFoundError):
        open_dataset("vid4", tmp_path / "nowhere")


def test_train_clips_crop_aligned_patches_from_provided_lr(tmp_path):
    """With a provided LR tree, the LR patch is the LR frame's crop at the HR crop's position divided by 4."""
    write_clip(tmp_path / "GT" / "a", 3, 32, 40)
    write_clip(tmp_path / "BIx4" / "a", 3, 8, 10, seed=5)
    data = vid4(tmp_path)
    train = TrainClips(data.hr, num_frames=3, patch_size=4, augment=False, lr_clips=data.lr)
    hr_frames, lr_frames = data.hr[0].frames(range(3)), data.lr[0].frames(range(3))
    for i in range(4):
        sample = train[i]
        hr = sample["hr"]
        matches = [
            (y, x)
            for y in range(0, 17, 4)
            for x in range(0, 25, 4)
            if torch.equal(hr_frames[..., y : y + 16, x : x + 16], hr)
        ]
        assert len(matches) == 1
        y, x = matches[0]
        assert torch.equal(sample["lr"], lr_frames[..., y // 4 : y // 4 + 4, x // 4 : x // 4 + 4])
    val = ValClips(data.hr, num_frames=3, crop=16, lr_clips=data.lr)
    item = val[1]
    assert torch.equal(item["hr"], hr_frames[..., 8:24, 12:28])
    assert torch.equal(item["lr"], lr_frames[..., 2:6, 3:7])
    with pytest.raises(DatasetError, match="1 LR clips for 2 HR clips"):
        TrainClips(data.hr * 2, num_frames=3, patch_size=4, lr_clips=data.lr)
