"""EMA of the weights (BasicSR's params_ema), TensorBoard events and the matplotlib training curve."""

from __future__ import annotations

import sys

import pytest
import torch

from reference_models import create_model, load_checkpoint, model_from_checkpoint
from reference_models.training import TrainClips, Trainer, ValClips, plot_curves
from tests.reference_models.training.tiny import TinyVSR, config, photo_clip


def _trainer(tmp_path, model_fn=TinyVSR, **kw):
    torch.manual_seed(0)
    model = model_fn()
    data = TrainClips(
        [photo_clip(0, t=model.num_frames), photo_clip(1, t=model.num_frames)],
        num_frames=model.num_frames,
        patch_size=6,
        seed=1,
    )
    return Trainer(model, data, config(tmp_path, **{"steps": 4, "batch_size": 2, "lr": 1e-2, **kw}))


def _mana():
    return create_model("mana", "tiny")


def test_ema_is_the_moving_average_of_the_weights(tmp_path):
    trainer = _trainer(tmp_path, ema=0.6)
    history = []
    for step in range(1, 5):
        trainer.fit(until=step)
        history.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    expected = dict(history[0])  # the first update copies the weights
    for weights in history[1:]:
        expected = {k: 0.6 * expected[k] + 0.4 * weights[k] for k in expected}
    got = trainer.ema.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)
    assert not torch.equal(got["body.0.weight"], history[-1]["body.0.weight"])


def test_ema_is_saved_as_params_ema_loaded_for_inference_and_resumed_exactly(tmp_path):
    whole = _trainer(tmp_path / "whole", model_fn=_mana, ema=0.9)
    whole.fit()
    part = _trainer(tmp_path / "part", model_fn=_mana, ema=0.9)
    part.fit(until=2)
    resumed = _trainer(tmp_path / "part", model_fn=_mana, ema=0.9)
    resumed.load_checkpoint(tmp_path / "part" / "last.pt")
    resumed.fit()
    for k, v in whole.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k

    path = tmp_path / "whole" / "last.pt"
    saved = torch.load(path, weights_only=True)
    assert set(saved["params_ema"]) == set(saved["state_dict"])
    assert saved["training"]["ema"] == {"decay": 0.9, "updates": 4}
    rebuilt = model_from_checkpoint(path)  # what run and export load: the average
    assert all(torch.equal(v, saved["params_ema"][k]) for k, v in rebuilt.state_dict().items())
    raw = create_model("mana", "tiny")
    load_checkpoint(raw, path, ema=False)
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in raw.state_dict().items())


def test_validation_scores_the_averaged_weights(tmp_path):
    val = ValClips([photo_clip(3, t=3, size=32)], num_frames=3, frames_per_clip=1, crop=None)
    trainer = _trainer(tmp_path, ema=0.5)
    trainer.val_data = val
    trainer.fit()
    scored = trainer.validate()
    plain = Trainer(TinyVSR(), trainer.train_data, config(tmp_path / "plain", steps=1), val)
    plain.model.load_state_dict(trainer.ema.state_dict())
    assert scored["psnr_y"] == pytest.approx(plain.validate()["psnr_y"], rel=1e-9)


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(tmp_path, tensorboard=True, val_every=2)
    trainer.val_data = ValClips([photo_clip(3, t=3, size=32)], num_frames=3, frames_per_clip=1, crop=None)
    trainer.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert losses == [(r.step, pytest.approx(r.loss, rel=1e-6)) for r in trainer.rows]
    assert [e.step for e in events.Scalars("val/psnr_y")] == [2, 4]
    assert events.Scalars("train/lr")[0].value == pytest.approx(trainer.rows[0].lr)


def test_curve_is_drawn_with_matplotlib_and_with_pillow_without_it(tmp_path, monkeypatch, capsys):
    """The core install has no matplotlib: the curve is still drawn (with Pillow), silently, the same size."""
    import numpy as np
    from PIL import Image

    losses = [(k, 1.0 / (k + 1)) for k in range(40)] + [(40, float("nan"))]
    assert plot_curves(losses, [(10, 25.0), (40, 26.5)], tmp_path / "curve.png", baseline=24.0)
    assert Image.open(tmp_path / "curve.png").size == (960, 320)

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert not plot_curves(losses, [(10, 25.0), (40, 26.5)], tmp_path / "pillow.png", baseline=24.0)
    drawn = np.asarray(Image.open(tmp_path / "pillow.png").convert("RGB"))
    assert drawn.shape == (320, 960, 3)
    blue, green, red = ((drawn == c).all(-1).sum() for c in ((31, 119, 180), (44, 160, 44), (214, 39, 40)))
    assert blue > 100 and green > 20 and red > 20  # the loss curve, the PSNR points and the bicubic line
    assert not plot_curves([], [], tmp_path / "empty.png") and (tmp_path / "empty.png").exists()
    assert capsys.readouterr().err == ""
