from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.data.datasets import load_dataset
from leanseg.data.io import read_image, read_label
from leanseg.errors import LeansegError
from leanseg.inference import Predictor, collect_inputs, label_map, pad_to_multiple
from tests.conftest import write_nifti


def test_pad_to_multiple_and_crop_back() -> None:
    x = torch.randn(1, 2, 5, 9, 8)
    xp, crop = pad_to_multiple(x, (4, 4, 4), minimum=(12, 4, 4))
    assert xp.shape[2:] == (12, 12, 8)
    assert torch.equal(xp[crop], x)


@pytest.mark.parametrize("classes", [1, 2, 5])
def test_label_map_equals_argmax_with_ties_to_the_lower_class(classes: int) -> None:
    g = torch.Generator().manual_seed(classes)
    probs = torch.randint(0, 3, (classes, 7, 6, 5), generator=g).float()  # coarse values: many ties
    probs[:, 0, 0, 0] = 1.0  # an all-equal voxel goes to class 0
    out = label_map(probs)
    assert out.dtype == torch.uint8 and out.shape == (7, 6, 5)
    assert torch.equal(out.long(), torch.argmax(probs, 0))


def test_regions_are_painted_in_their_class_order() -> None:
    from dataclasses import replace

    from leanseg.inference import plan_label_map
    from leanseg.plan import Plan

    plan = Plan((1.0,) * 3, (8,) * 3, ((1, 1, 1),), (4,), ("zscore",), (None,), (8,) * 3, "RAS", True, 1, 4, {0: "bg"})
    plan = replace(plan, regions=((1, 2, 3), (2, 3), (3,)), regions_class_order=(1, 2, 3))
    probs = torch.tensor([[0.9, 0.9, 0.9, 0.1, 0.9], [0.1, 0.8, 0.8, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1, 0.9]]).reshape(3, 5, 1, 1)
    assert plan_label_map(probs, plan).flatten().tolist() == [1, 2, 3, 0, 3]  # later regions paint over earlier ones


def test_labels_keep_the_input_shape_and_affine(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    ds = load_dataset(phantoms)
    case = ds.cases[0]
    img = read_image(list(case.images))
    # the same image on an oblique, anisotropic grid: output must follow that grid exactly
    affine = np.array([[0, -1.2, 0, 30], [0.9, 0, 0, -4], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    src = write_nifti(tmp_path / "in" / "odd.nii.gz", img.array[0], affine)
    p = Predictor.from_run(trained_run)
    res = p.predict_files([("odd", [src])], tmp_path / "out")
    out = read_label(res[0].output)
    assert out.shape == img.shape and np.allclose(out.affine, affine)
    assert res[0].seconds > 0 and set(res[0].timings) == {"preprocess", "network", "postprocess", "total"}


def test_whole_and_sliding_agree(trained_run: Path, phantoms: Path) -> None:
    """Compared on foreground probabilities, not on a label map that an 8-iteration model leaves mostly background."""
    img = read_image(list(load_dataset(phantoms).cases[1].images))
    whole = Predictor.from_run(trained_run, mode="whole")
    sliding = Predictor.from_run(trained_run, mode="sliding", overlap=0.5)
    assert any(s > p for s, p in zip(whole.preprocessor(img)["image"].shape[1:], whole.plan.patch_size))  # several windows, blended
    fg_whole = whole.predict_volume_probabilities(img)[0][1:].numpy()
    fg_sliding = sliding.predict_volume_probabilities(img)[0][1:].numpy()
    assert fg_whole.std() > 0.01  # the maps vary over the image: agreement is not that of two constants
    # measured: correlation 0.96, error 0.28 of the maps' own spread; windows misplaced by one voxel give 0.80 and 0.44
    assert np.corrcoef(fg_whole.ravel(), fg_sliding.ravel())[0, 1] > 0.9
    assert np.abs(fg_whole - fg_sliding).mean() < 0.4 * np.abs(fg_whole - fg_whole.mean()).mean()


def test_onnx_and_bf16_match_eager(trained_run: Path, phantoms: Path) -> None:
    from leanseg.export import export_onnx

    export_onnx(trained_run)
    p = Predictor.from_run(trained_run)
    x = torch.randn(2, 1, 16, 24, 16)
    eager = p.net(x)
    onnx = Predictor.from_run(trained_run, backend="onnx").net(x)
    assert torch.allclose(eager, onnx, atol=1e-3)
    bf16 = Predictor.from_run(trained_run, backend="bf16").net(x)
    assert torch.allclose(eager, bf16, atol=0.1 * float(eager.abs().max()))


def test_bad_inputs_stop_with_one_sentence(trained_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    two = write_nifti(tmp_path / "two.nii.gz", rng.random((8, 8, 8, 2)).astype(np.float32))
    p = Predictor.from_run(trained_run)
    with pytest.raises(LeansegError, match="two.nii.gz has 2 channel"):
        p.predict_files([("two", [two])], tmp_path / "out")
    assert not (tmp_path / "out" / "two.nii.gz").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LeansegError, match="is a file"):
        p.predict_files([], tmp_path / "file")
    big = write_nifti(tmp_path / "big.nii.gz", rng.random((64, 64, 64)).astype(np.float32))
    with pytest.raises(LeansegError, match="big.nii.gz .* over the 0.001 GiB limit"):
        Predictor.from_run(trained_run, max_memory_gb=0.001).predict_files([("big", [big])], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".leanseg-predictions.json", ".lock"]  # no label file


def test_an_ensemble_averages_its_members_probabilities(trained_run: Path, phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from leanseg.training import train

    other = tmp_path / "other"
    train(phantoms, other, tiny_cfg.with_overrides({"train.seed": 1}), fold=1, show_progress=False)
    img = read_image(list(load_dataset(phantoms).cases[0].images))
    one, two = (Predictor.from_run(r).predict_volume_probabilities(img)[0] for r in (trained_run, other))
    assert (one - two).abs().max() > 1e-3  # two different models: their mean is not either one
    both = Predictor.from_run([trained_run, other])
    assert len(both.nets) == 2
    assert torch.allclose(both.predict_volume_probabilities(img)[0], (one + two) / 2, atol=1e-5)
    planned_apart = tmp_path / "planned_apart"
    train(phantoms, planned_apart, tiny_cfg.with_overrides({"data.patch_size": [16, 16, 8]}), show_progress=False)
    with pytest.raises(LeansegError, match="planned differently .* ensemble runs of one dataset and plan"):
        Predictor.from_run([trained_run, planned_apart])


def test_predict_command_ensembles_repeated_models(trained_run: Path, phantoms: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    case = load_dataset(phantoms).cases[0]
    args = ["predict", "-m", str(trained_run), "-m", str(trained_run), "-i", str(case.images[0]), "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "ensemble of 2" in r.output
    single = Predictor.from_run(trained_run).predict_volume(read_image(list(case.images)))[0]
    assert np.array_equal(read_label(tmp_path / "out" / case.images[0].name).array, single)  # a model with itself: the same labels


def test_onnx_backend_needs_an_export(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("model.onnx"))
    with pytest.raises(LeansegError, match="No ONNX model .* run `leanseg export"):
        Predictor.from_run(run, backend="onnx")


def test_collect_inputs_groups_channels(tmp_path: Path) -> None:
    for c in range(2):
        write_nifti(tmp_path / f"a_{c:04d}.nii.gz", np.zeros((2, 2, 2), np.float32))
    assert collect_inputs(tmp_path, 2) == [("a", [tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"])]
    (tmp_path / "a_0001.nii.gz").unlink()
    write_nifti(tmp_path / "b_0000.nii.gz", np.zeros((2, 2, 2), np.float32))
    write_nifti(tmp_path / "b_0001.nii.gz", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(LeansegError, match="Channel 0001 of case 'a' is missing"):
        collect_inputs(tmp_path, 2)


@pytest.mark.realdata
def test_real_hippocampus_train_predict_keeps_geometry(tmp_path: Path, tiny_cfg) -> None:
    from leanseg.training import train
    from tests.conftest import SHARED_DATA

    data = SHARED_DATA / "Task04_Hippocampus"
    cfg = tiny_cfg.with_overrides({"train.iterations": 4, "train.val_max_cases": 2, "data.num_folds": 5})
    train(data, tmp_path / "run", cfg, show_progress=False)
    case = load_dataset(data).cases[0]
    res = Predictor.from_run(tmp_path / "run", backend="bf16").predict_files([(case.case_id, list(case.images))], tmp_path / "pred")
    out, ref = read_label(res[0].output), read_label(case.label)
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
    assert set(np.unique(out.array)) <= {0, 1, 2}


def test_a_tiny_image_is_predicted_and_a_sub_voxel_one_is_one_sentence(trained_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tiny = write_nifti(tmp_path / "in" / "tiny.nii.gz", rng.random((2, 2, 2)).astype(np.float32))  # under the network's divisor
    res = Predictor.from_run(trained_run).predict_files([("tiny", [tiny])], tmp_path / "out")
    assert read_image(res[0].output, check_values=False).shape == (2, 2, 2)
    thin = write_nifti(tmp_path / "in" / "thin.nii.gz", rng.random((20, 20, 20)).astype(np.float32), np.diag([0.01, 0.01, 0.01, 1]))
    with pytest.raises(LeansegError, match=r"thin.nii.gz spans 0.2 x 0.2 x 0.2 mm, less than two voxels of the model's"):
        Predictor.from_run(trained_run).predict_files([("thin", [thin])], tmp_path / "out")
