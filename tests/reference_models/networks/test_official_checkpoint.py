"""Official MANA and VSR-Transformer state_dicts recognised from the file alone (bare and in BasicSR / MMagic
wrappers), with the sizes read off the weights, the paper's values for the rest and keyword overrides; also
through ``run --checkpoint FILE`` without a model name."""

import pytest
import torch

import reference_models
from reference_models.checkpoint import CheckpointError, build_from_checkpoint, model_from_checkpoint, save_checkpoint
from reference_models.networks.mana import _distance_matrix
from reference_models.networks.mana import official_config_from_state_dict as mana_config
from reference_models.networks.vsrt import official_config_from_state_dict as vsrt_config
from tests.official import MANA_FIXTURE, VSRT_FIXTURE, load_official
from tests.reference_models.cli.test_cli import assert_one_line_error, run_cli
from tests.reference_models.helpers import LocalVSR, random_frames, write_folder

WRAPPERS = {
    "bare": lambda sd: sd,
    "basicsr-params": lambda sd: {"params": sd},
    "basicsr-params_ema": lambda sd: {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
    "mmagic-generator": lambda sd: {"meta": {"epoch": 3}, "state_dict": {f"generator.{k}": v for k, v in sd.items()}},
    "mmagic-generator_ema": lambda sd: {
        "state_dict": {
            **{f"generator.{k}": torch.zeros_like(v) for k, v in sd.items()},
            **{f"generator_ema.{k}": v for k, v in sd.items()},
            "discriminator.fc.weight": torch.zeros(1, 4),
        }
    },
    "dataparallel-module": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
}


@pytest.fixture(scope="module")
def fixtures():
    return {"mana": load_official(MANA_FIXTURE), "vsrt": load_official(VSRT_FIXTURE)}


def official_config(data):
    return {k: v for k, v in data["config"].items() if k != "spynet_pretrained"}


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


# every wrapper on the small MANA case; VSRT (larger to build) with two of them
@pytest.mark.parametrize(
    ("name", "wrapper"),
    [("mana", wrapper) for wrapper in WRAPPERS] + [("vsrt", "bare"), ("vsrt", "mmagic-generator_ema")],
)
def test_official_file_alone_rebuilds_the_model(tmp_path, fixtures, name, wrapper):
    data = fixtures[name]
    path = tmp_path / f"{name}.pth"
    torch.save(WRAPPERS[wrapper](data["state_dict"]), path)
    lines = []
    model = model_from_checkpoint(path, report=lines.append)
    reference = reference_models.from_official(name, data["state_dict"], **official_config(data))
    assert type(model) is type(reference) and not model.training
    assert_same_weights(model, reference)
    assert model.model_spec == reference.model_spec and model.model_spec["name"] == name
    assert len(lines) == 1 and f"official {name} weights" in lines[0]
    if name == "mana":
        assert "in_channels=32, encoder_nblocks=1, decoder_nblocks=1, width=16, height=12" in lines[0]
        assert "paper values" not in lines[0]
    else:
        assert "num_feat=16, feat_size=64" in lines[0] and "depth=1" in lines[0]
        assert (
            "paper values (not in the weights, override with KEY=VALUE): num_frame=5, heads=1, patch_size=8" in lines[0]
        )


@pytest.mark.thread_counts
def test_official_mana_from_the_file_reproduces_the_recorded_output(num_threads, tmp_path, fixtures):
    data = fixtures["mana"]
    torch.save({"params": data["state_dict"]}, tmp_path / "mana.pth")
    with torch.no_grad():
        out = model_from_checkpoint(tmp_path / "mana.pth")(data["inputs"]["x"])
    torch.testing.assert_close(out, data["outputs"]["out"], atol=1e-5, rtol=0)


def test_inferred_configs_equal_the_recorded_ones(fixtures):
    assert mana_config(fixtures["mana"]["state_dict"]) == (official_config(fixtures["mana"]), ())
    config, assumed = vsrt_config(fixtures["vsrt"]["state_dict"])
    assert config == official_config(fixtures["vsrt"]) and assumed == ("num_frame", "heads", "patch_size")


@pytest.mark.parametrize(("height", "width"), [(12, 16), (3, 5), (7, 2), (1, 6)])
def test_mana_training_size_is_read_from_the_distance_matrix(fixtures, height, width):
    sd = {k: v for k, v in fixtures["mana"]["state_dict"].items() if k != "nonloc_spatial.D"}
    sd["nonloc_spatial.D"] = _distance_matrix(height, width).float()
    config, assumed = mana_config(sd)
    assert (config["height"], config["width"]) == (height, width) and assumed == ()
    del sd["nonloc_spatial.D"]
    config, assumed = mana_config(sd)
    assert (config["width"], config["height"]) == (112, 64) and assumed == ("width", "height")


def test_vsrt_frame_count_follows_inv_freq_and_overrides_win(tmp_path, fixtures):
    sd = dict(fixtures["vsrt"]["state_dict"])
    sd["pos_embedding.penc.inv_freq"] = torch.tensor([1.0, 0.01])
    path = tmp_path / "vsrt7.pth"
    torch.save({"params": sd}, path)
    lines = []
    model = model_from_checkpoint(path, report=lines.append, heads=2)
    assert model.num_frames == 7 and model.model_spec["overrides"]["num_heads"] == 2
    assert "num_frame=7, patch_size=8" in lines[0] and "given: heads=2" in lines[0]
    model = model_from_checkpoint(path, num_frame=8, report=lines.append)
    assert model.num_frames == 8
    with pytest.raises(CheckpointError, match=r"official vsrt state_dict; \['channels'\] are not among its settings"):
        model_from_checkpoint(path, channels=8)
    with pytest.raises(CheckpointError, match="inv_freq"):
        model_from_checkpoint(path, num_frame=5)


def test_official_model_saves_and_rebuilds_from_our_checkpoint(tmp_path, fixtures):
    data = fixtures["mana"]
    torch.save(data["state_dict"], tmp_path / "official.pth")
    model = model_from_checkpoint(tmp_path / "official.pth")
    save_checkpoint(model, tmp_path / "ours.safetensors")
    assert_same_weights(model_from_checkpoint(tmp_path / "ours.safetensors"), model)


def test_unrecognised_state_dict_says_what_was_looked_for(tmp_path):
    torch.save({"params": LocalVSR().state_dict()}, tmp_path / "mystery.pth")
    with pytest.raises(
        CheckpointError,
        match=r"is neither a reference_models checkpoint .* nor an official [a-z ]*mana or vsrt "
        r"state_dict .*params/params_ema/state_dict",
    ):
        model_from_checkpoint(tmp_path / "mystery.pth")


def test_run_with_an_official_checkpoint_alone(tmp_path, capsys, fixtures):
    torch.save({"params": fixtures["mana"]["state_dict"]}, tmp_path / "mana.pth")
    src = write_folder(tmp_path / "in", random_frames(2, 6, 8), ["a.png", "b.png"])
    code, _, err = run_cli(
        capsys, "run", "--checkpoint", tmp_path / "mana.pth", "-i", src, "-o", tmp_path / "out", "--device=cpu"
    )
    assert code == 0, err
    assert "official mana weights; from the weights: in_channels=32" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_run_passes_model_args_and_refuses_unknown_files(tmp_path, capsys):
    torch.save(LocalVSR().state_dict(), tmp_path / "mystery.pth")
    src = write_folder(tmp_path / "in", random_frames(1, 6, 8), ["a.png"])
    code, _, err = run_cli(capsys, "run", "--checkpoint", tmp_path / "mystery.pth", "-i", src, "-o", tmp_path / "o")
    assert_one_line_error(code, err, "or mana or vsrt state_dict")
    code, _, err = run_cli(
        capsys, "run", "mana", "--preset", "tiny", "--model-arg", "num_frames", "-i", src, "-o", tmp_path / "o"
    )
    assert_one_line_error(code, err, "model argument 'num_frames' is not KEY=VALUE")
    assert not (tmp_path / "o").exists()


def test_our_own_bare_state_dict_is_not_taken_for_an_official_one(tmp_path, fixtures):
    torch.save(fixtures["vsrt"]["state_dict"], tmp_path / "official.pth")
    ours = model_from_checkpoint(tmp_path / "official.pth")
    torch.save(ours.state_dict(), tmp_path / "ours_bare.pth")
    with pytest.raises(CheckpointError, match="nor an official [a-z ]*mana or vsrt state_dict"):
        model_from_checkpoint(tmp_path / "ours_bare.pth")
    fresh = reference_models.create_model("vsrt", "paper", **ours.model_spec["overrides"])
    reference_models.load_checkpoint(fresh, tmp_path / "ours_bare.pth")
    assert_same_weights(fresh, ours)


def test_naming_the_model_of_an_official_file_still_infers_it_and_reads_the_file_once(tmp_path, fixtures, monkeypatch):
    data = fixtures["mana"]
    torch.save({"params": data["state_dict"]}, tmp_path / "mana.pth")
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (loads.append(a[0]), real_load(*a, **k))[1])
    lines = []
    model = build_from_checkpoint(tmp_path / "mana.pth", "mana", report=lines.append)
    assert len(loads) == 1 and "official mana weights" in lines[0]
    assert_same_weights(model, reference_models.from_official("mana", data["state_dict"], **data["config"]))
    with pytest.raises(CheckpointError, match="does not fit DASAA"):
        build_from_checkpoint(tmp_path / "mana.pth", "dasaa", report=lines.append)
