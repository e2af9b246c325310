import copy
import os
from pathlib import Path

import pytest
import torch

import reference_models
from reference_models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from tests.official import MANA_FIXTURE
from tests.reference_models.helpers import LocalVSR


def tiny(name="mana", **overrides):
    try:
        return reference_models.create_model(name, "tiny", **overrides)
    except ImportError:
        pytest.skip(f"{name} is not written yet")


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_round_trip_rebuilds_model_from_spec_with_extras(tmp_path):
    torch.manual_seed(0)
    model = tiny("mana", num_frames=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(1, 5, 3, 8, 8)).mean().backward()
    optimizer.step()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, path, step=7, optimizer=optimizer.state_dict())

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["model_spec"] == {"name": "mana", "preset": "tiny", "overrides": {"num_frames": 5}}
    assert raw["step"] == 7 and "state" in raw["optimizer"]

    rebuilt = model_from_checkpoint(path)
    assert rebuilt.num_frames == 5 and rebuilt.model_spec == model.model_spec
    assert_same_weights(rebuilt, model)

    fresh = tiny("mana", num_frames=5)
    extras = load_checkpoint(fresh, path)
    assert_same_weights(fresh, model)
    assert extras["step"] == 7
    optimizer2 = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    optimizer2.load_state_dict(extras["optimizer"])


def test_model_without_spec_loads_but_cannot_be_rebuilt(tmp_path):
    model = LocalVSR(seed=1)
    path = tmp_path / "local.pt"
    save_checkpoint(model, path)
    fresh = LocalVSR(seed=2)
    load_checkpoint(fresh, path)
    assert_same_weights(fresh, model)
    with pytest.raises(CheckpointError, match="has no model_spec"):
        model_from_checkpoint(path)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "mana.pt"
    save_checkpoint(tiny("mana"), path)
    other = tiny("dasaa")
    with pytest.raises(CheckpointError, match=r"holds mana \(preset 'tiny'\), not dasaa"):
        load_checkpoint(other, path)


def test_mismatched_shapes_name_the_keys(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(LocalVSR(num_frames=3), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv.weight"):
        load_checkpoint(LocalVSR(num_frames=5), path)


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"params": sd}])
def test_missing_and_unexpected_keys_are_named(tmp_path, wrap):
    state = LocalVSR().state_dict()
    del state["conv.bias"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(wrap(state), path)
    with pytest.raises(CheckpointError, match=r"missing keys: .*conv\.bias.*unexpected keys: .*head\.weight"):
        load_checkpoint(LocalVSR(), path)
    torch.load(path, weights_only=True)  # the file itself is plain: the error is about the keys, not unpickling


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(LocalVSR(), tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        model_from_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(LocalVSR(), corrupt)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        model_from_checkpoint(corrupt)


def test_files_that_need_unsafe_unpickling_are_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": LocalVSR().state_dict(), "evil": Path("x")}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(LocalVSR(), path)


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"params": sd}, lambda sd: {"state_dict": sd},
                                  lambda sd: {f"module.{k}": v for k, v in sd.items()}])
def test_plain_and_wrapped_state_dicts_load(tmp_path, wrap):
    model = LocalVSR(seed=3)
    path = tmp_path / "plain.pth"
    torch.save(wrap(model.state_dict()), path)
    fresh = LocalVSR(seed=4)
    assert load_checkpoint(fresh, path) == {}
    assert_same_weights(fresh, model)


def test_official_mana_checkpoint_loads_through_the_key_map(tmp_path):
    fixture = MANA_FIXTURE
    if not fixture.exists():
        pytest.skip("official MANA fixture not available")
    data = torch.load(fixture, map_location="cpu", weights_only=True)
    try:
        reference = reference_models.from_official("mana", data["state_dict"], **data["config"])
    except ImportError:
        pytest.skip("mana is not written yet")
    model = copy.deepcopy(reference)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    official = tmp_path / "official.pth"
    torch.save({"params": data["state_dict"]}, official)
    load_checkpoint(model, official)
    assert_same_weights(model, reference)


def test_extras_must_be_plain(tmp_path):
    with pytest.raises(ValueError, match="extra\\['bad'\\] is a PosixPath|extra\\['bad'\\] is a WindowsPath"):
        save_checkpoint(LocalVSR(), tmp_path / "x.pt", bad=Path("x"))
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(LocalVSR(), tmp_path / "x.pt", state_dict={})
    assert not list(tmp_path.iterdir())


def test_read_checkpoint_refuses_plain_state_dicts(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(LocalVSR().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a reference_models checkpoint"):
        read_checkpoint(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous file intact and no temporary file behind."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(LocalVSR(seed=1), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(LocalVSR(seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(LocalVSR(), tmp_path)
