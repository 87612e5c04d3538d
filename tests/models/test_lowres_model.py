"""The LowRes networks: shapes, stage-two output against the detailed network on the same crop, the
stage-one loss worked by hand, frozen stage one, and training + prediction end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.checkpoint import load_pretrained
from leanseg.errors import LeansegError
from leanseg.models.lowres import LowResNet
from leanseg.training import TrainResult

SMALL = {"low_features": (4, 8, 8, 8), "detail_features": (4, 4, 8, 8)}


def _forced_stage_one(model: LowResNet, positive: tuple[slice, slice, slice]) -> None:
    """Keep stage one's real features but make its map exactly 1 inside ``positive``, 0 elsewhere."""
    real = model.stage_one.forward

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, low = real(x)
        forced = torch.full_like(low, -20.0)
        forced[(slice(None), slice(None), *positive)] = 20.0
        return feats, forced

    model.stage_one.forward = forward  # type: ignore[method-assign]


@pytest.mark.parametrize("classes", [2, 3])
def test_inference_returns_log_probabilities_and_training_returns_the_stage_outputs(classes: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 16, 48)
    one = LowResNet(1, classes, stage=1, **SMALL)
    assert one.train()(x)["low_logits"].shape == (2, 1, 4, 2, 6)
    two = LowResNet(1, classes, stage=2, threshold=0.0, **SMALL)  # threshold 0: the whole volume is one box
    assert two.train()(x)["logits"].shape == (2, 1 if classes == 2 else classes, 32, 16, 48)
    with torch.no_grad():
        logp = two.eval()(x)
    assert logp.shape == (2, classes, 32, 16, 48)
    assert torch.allclose(logp.exp().sum(1), torch.ones(2, 32, 16, 48), atol=1e-5)
    assert two.last_stats["fraction"] == 1.0 and two.last_stats["boxes"] == 1


@pytest.mark.parametrize("classes", [2, 3])
def test_stage_two_output_equals_the_detailed_network_on_the_same_crop(classes: int) -> None:
    torch.manual_seed(1)
    model = LowResNet(1, classes, stage=2, margin=1, **SMALL).eval()
    _forced_stage_one(model, (slice(1, 3), slice(2, 4), slice(0, 1)))
    x = torch.randn(1, 1, 48, 48, 32)  # low resolution 6 x 6 x 4
    with torch.no_grad():
        probs = model(x).exp()[0]
        feats, _ = model.stage_one(x)
        low_box = (slice(0, 4), slice(1, 5), slice(0, 2))  # margin 1, clipped at the first z face
        full_box = (slice(0, 32), slice(8, 40), slice(0, 16))
        crop = model.detail(x[(slice(None), slice(None), *full_box)], feats[(slice(None), slice(None), *low_box)])[0]
    want = torch.sigmoid(crop) if classes == 2 else torch.softmax(crop, 0)[1:]
    assert torch.allclose(probs[(slice(1, None), *full_box)], want, atol=1e-5)
    outside = torch.ones(48, 48, 32, dtype=torch.bool)
    outside[full_box] = False
    assert probs[1:, outside].max() < 1e-6 and torch.allclose(probs[0, outside], torch.ones(()))
    assert model.last_stats["boxes"] == 1
    assert model.last_stats["fraction"] == pytest.approx(32 * 32 * 16 / (48 * 48 * 32))


def test_nothing_found_sends_nothing_to_stage_two() -> None:
    model = LowResNet(1, 2, stage=2, **SMALL).eval()
    _forced_stage_one(model, (slice(0, 0),) * 3)
    calls = []
    model.detail.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        probs = model(torch.randn(1, 1, 32, 32, 32)).exp()
    assert not calls and model.last_stats["fraction"] == 0.0
    assert torch.allclose(probs[0, 0], torch.ones(())) and probs[0, 1].max() < 1e-6


def test_stage_one_loss_is_weighted_cross_entropy_against_the_label_max_pooled_by_8() -> None:
    model = LowResNet(1, 2, stage=1, pos_weight=10.0, **SMALL)
    label = torch.zeros(1, 1, 16, 16, 16)
    label[0, 0, 9, 0, 3] = 1  # one foreground voxel: one of the 2 x 2 x 2 low-resolution voxels is positive
    # logits 0 -> every voxel costs ln 2, the positive one 10 times: (10 + 7) ln 2 / 8
    loss = model.training_loss({"low_logits": torch.zeros(1, 1, 2, 2, 2)}, label)
    assert loss.item() == pytest.approx(17 * math.log(2) / 8, rel=1e-6)
    # a logit of +20 on the positive voxel and -20 elsewhere costs almost nothing
    logits = torch.full((1, 1, 2, 2, 2), -20.0)
    logits[0, 0, 1, 0, 0] = 20.0
    assert model.training_loss({"low_logits": logits}, label).item() < 1e-6


def test_stage_one_stays_frozen_while_stage_two_trains() -> None:
    torch.manual_seed(2)
    model = LowResNet(1, 2, stage=2, **SMALL).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 1, 32, 32, 32), (torch.rand(2, 1, 32, 32, 32) > 0.7).float()
    model.training_loss(model(x), y).backward()
    assert not model.stage_one.training
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("stage_one."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("detail."))


def test_stage_two_starts_from_stage_one_weights_and_a_wrong_checkpoint_is_refused(tmp_path: Path) -> None:
    one = LowResNet(1, 2, stage=1, **SMALL)
    two = LowResNet(1, 2, stage=2, **SMALL)
    assert load_pretrained(two, {"model": one.state_dict()}, tmp_path / "one.pt") == len(one.state_dict())
    assert torch.equal(two.stage_one.head.weight, one.stage_one.head.weight)
    wider = LowResNet(1, 2, stage=1, low_features=(8, 8, 8, 8), detail_features=(4, 4, 8, 8))
    with pytest.raises(LeansegError, match="one.pt does not fit"):
        load_pretrained(two, {"model": wider.state_dict()}, tmp_path / "one.pt")


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leanseg.data.synthetic_chest import generate_chest_dataset

    return generate_chest_dataset(tmp_path_factory.mktemp("chest"), num_cases=4, seed=3, shape=(64, 64, 48))


def _train_both_stages(data: Path, out: Path, overrides: dict, stage_two: dict | None = None) -> TrainResult:
    """Train stage one into ``out/one``, then stage two from it into ``out/two``; the second run's result."""
    from leanseg.config import ExperimentConfig
    from leanseg.training import train

    cfg = ExperimentConfig().with_overrides(
        {"model.name": "lowres", "model.extra": {"stage": 1, **SMALL}, "train.num_workers": 0, **overrides}
    )
    train(data, out / "one", cfg, show_progress=False)
    two = {"model.extra.stage": 2, **(stage_two or {}), "train.init_checkpoint": str(out / "one" / "checkpoint_final.pt")}
    return train(data, out / "two", cfg.with_overrides(two), show_progress=False)


def test_two_runs_train_the_stages_and_predict_reports_them(chest: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.data.io import read_image

    overrides = {
        "data.patch_size": [32, 32, 32],
        "data.num_folds": 2,
        "train.iterations": 4,
        "train.val_every": 4,
        "train.checkpoint_every": 4,
    }
    r = _train_both_stages(chest, tmp_path, overrides, {"model.extra.threshold": 0.0})
    assert 0.0 <= r.val["val_dice"] <= 1.0
    s1 = torch.load(tmp_path / "one" / "checkpoint_final.pt", weights_only=True)["model"]
    s2 = torch.load(tmp_path / "two" / "checkpoint_final.pt", weights_only=True)["model"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("stage_one."))

    image = chest / "imagesTr" / "chest_000.nii.gz"
    args = ["predict", "-m", str(tmp_path / "two"), "-i", str(image), "-o", str(tmp_path / "pred"), "--threads", "1"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "to stage 2" in res.output and "100.00 %" in res.output  # threshold 0: everything goes to stage two
    out = read_image(tmp_path / "pred" / "chest_000.nii.gz")
    src = read_image(image)
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)

    # deployment: one ONNX graph per network, the box loop in Python; the same probabilities as eager
    from leanseg.export import export_onnx
    from leanseg.inference import Predictor

    written = export_onnx(tmp_path / "two")
    assert sorted(p.name for p in written) == ["lowres_detail.onnx", "lowres_stage_one.onnx"]
    eager, _ = Predictor.from_run(tmp_path / "two").predict_volume_probabilities(src)
    onnx, timings = Predictor.from_run(tmp_path / "two", backend="onnx").predict_volume_probabilities(src)
    assert timings["fraction"] == pytest.approx(1.0) and timings["stage2"] > 0
    assert torch.allclose(eager, onnx, atol=1e-3) and eager[1:].std() > 1e-4
    res = CliRunner().invoke(
        app, [*args[:-4], "-o", str(tmp_path / "pred_onnx"), "--backend", "onnx", "--threads", "1"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0 and "to stage 2" in res.output, res.output
    assert (read_image(tmp_path / "pred_onnx" / "chest_000.nii.gz").array == out.array).mean() > 0.999  # ties aside


@pytest.mark.realdata
def test_real_brats_two_channels_and_four_classes_by_softmax(tmp_path: Path) -> None:
    """Real BraTS volumes (FLAIR + T1c, 4 tumour classes, sizes not multiples of 16) through both stages."""
    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_label
    from leanseg.inference import Predictor
    from tests.conftest import SHARED_DATA

    data = SHARED_DATA / "BraTS2013_subset"
    overrides = {
        "data.patch_size": [64, 64, 64],
        "data.num_folds": 3,
        "train.iterations": 2,
        "train.val_every": 10**6,
        "train.val_max_cases": 1,
        "train.checkpoint_every": 2,
    }
    _train_both_stages(data, tmp_path, overrides)

    case = load_dataset(data).cases[0]
    p = Predictor.from_run(tmp_path / "two", backend="eager")
    assert p.model.detail.head.out_channels == 5  # softmax over background + 4 classes
    ref = read_label(case.label)
    for threshold, fraction in ((0.0, 1.0), (1.5, 0.0)):  # everything to stage two; nothing found
        p.model.threshold = threshold
        res = p.predict_files([(case.case_id, list(case.images))], tmp_path / f"pred{threshold}")[0]
        out = read_label(res.output)
        assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
        assert res.timings["fraction"] == pytest.approx(fraction)
        assert set(np.unique(out.array)) <= {0, 1, 2, 3, 4}
        if fraction == 0.0:
            assert res.timings["boxes"] == 0 and not out.array.any()  # the full-size map starts at zero
