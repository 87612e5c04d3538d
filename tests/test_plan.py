import numpy as np
import pytest

from leanseg.config import DataConfig, ModelConfig
from leanseg.data.fingerprint import Fingerprint, compute_fingerprint
from leanseg.plan import MAX_PATCH_VOXELS, MIN_FEATURE_SIZE, plan_from_fingerprint
from tests.conftest import SHARED_DATA


def fingerprint(spacings, shapes, modality="MRI") -> Fingerprint:
    return Fingerprint(
        dataset="x",
        modality=modality,
        num_channels=1,
        labels={0: "bg", 1: "a"},
        case_ids=[str(i) for i in range(len(shapes))],
        spacings=spacings,
        shapes=shapes,
        intensity=[{"mean": 0.0, "std": 1.0, "p00_5": -100.0, "p99_5": 250.0}],
        class_fractions={0: 0.9, 1: 0.1},
        empty_label_cases=[],
        notes=[],
    )


def test_isotropic_small_volumes_get_the_median_shape_rounded_to_the_strides() -> None:
    fp = fingerprint([[1, 1, 1]] * 3, [[35, 50, 36], [34, 52, 35], [36, 49, 34]])
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    divisor = np.prod(plan.strides, axis=0)
    assert plan.patch_size == (40, 56, 40)
    assert all(p % d == 0 for p, d in zip(plan.patch_size, divisor))
    assert plan.features == (16, 32, 64, 128) and plan.normalization == ("zscore",) and plan.ct_window == (None,)


def test_large_volumes_are_capped_for_the_cpu() -> None:
    fp = fingerprint([[1, 1, 1]] * 2, [[300, 300, 200]] * 2)
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    assert np.prod(plan.patch_size) <= MAX_PATCH_VOXELS  # the README's cap, after rounding to the strides
    coarsest = np.asarray(plan.patch_size) / np.prod(plan.strides, axis=0)
    assert np.all(coarsest >= MIN_FEATURE_SIZE) and np.all(coarsest < 2 * MIN_FEATURE_SIZE)  # pooled as far as it goes
    assert plan.features == tuple(16 * 2**i for i in range(len(plan.strides)))


@pytest.mark.parametrize(
    "shape,spacing",
    [((138, 169, 138), (1, 1, 1)), ((240, 240, 155), (1, 1, 1)), ((512, 512, 90), (0.8, 0.8, 5.0)), ((100, 300, 60), (1, 1, 2))],
)
def test_the_patch_cap_holds_after_rounding_and_no_edge_is_longer_than_the_data_allows(shape, spacing) -> None:
    fp = fingerprint([list(spacing)] * 2, [list(shape)] * 2)
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    divisor = np.prod(plan.strides, axis=0)
    assert np.prod(plan.patch_size) <= MAX_PATCH_VOXELS and all(p % d == 0 for p, d in zip(plan.patch_size, divisor))
    mm = np.asarray(plan.patch_size) * np.asarray(plan.target_spacing)
    shortest = int(np.argmin(np.asarray(shape) * np.asarray(spacing)))
    assert mm[shortest] < mm.max() or mm.max() == mm.min()  # not longest along the data's shortest side (BraTS: 80 of 155 z)


def test_anisotropic_ct_keeps_z_unpooled_early_and_uses_a_window() -> None:
    fp = fingerprint([[0.8, 0.8, 5.0]] * 2, [[160, 160, 26]] * 2, modality="CT")
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    assert plan.strides[1][2] == 1 and plan.strides[1][0] == 2
    assert plan.normalization == ("ct",) and plan.ct_window == ((-100.0, 250.0),)


def test_config_values_override_the_plan() -> None:
    fp = fingerprint([[1, 1, 1]] * 2, [[40, 40, 40]] * 2)
    plan = plan_from_fingerprint(
        fp, DataConfig(target_spacing=(2, 2, 2), patch_size=(32, 32, 32)), ModelConfig(features=(8, 16), strides=((1, 1, 1), (2, 2, 2)))
    )
    assert plan.target_spacing == (2, 2, 2) and plan.patch_size == (32, 32, 32) and plan.features == (8, 16)


def test_each_channel_gets_its_scheme_by_name_as_nnunet_maps_them() -> None:
    from dataclasses import replace

    from leanseg.errors import LeansegError
    from leanseg.plan import Plan

    fp = replace(
        fingerprint([[1, 1, 1]] * 2, [[40, 40, 40]] * 2),
        num_channels=5,
        channel_names=["T1", "CT", "noNorm", "rescale_to_0_1", "rgb_to_0_1"],
        intensity=[{"mean": 0.0, "std": 1.0, "p00_5": float(-10 * c), "p99_5": float(10 * c)} for c in range(5)],
    )
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    assert plan.normalization == ("zscore", "ct", "none", "rescale_to_0_1", "rgb_to_0_1")
    assert plan.ct_window == (None, (-10.0, 10.0), None, None, None)  # the CT channel's own percentiles, not channel 0's
    assert Plan.from_dict(plan.to_dict()) == plan
    given = plan_from_fingerprint(fp, DataConfig(normalization="zscore,ct,zscore,noNorm,none"), ModelConfig())
    assert given.normalization == ("zscore", "ct", "zscore", "none", "none")
    with pytest.raises(LeansegError, match="one of those per channel \\(5 here\\)"):
        plan_from_fingerprint(fp, DataConfig(normalization="zscore,ct"), ModelConfig())
    old = {**plan.to_dict(), "normalization": "ct", "ct_window": [-5.0, 5.0]}  # a plan.json from before, one scheme for all
    assert Plan.from_dict(old).normalization == ("ct",) * 5 and Plan.from_dict(old).ct_window == ((-5.0, 5.0),) * 5


@pytest.mark.realdata
def test_real_spleen_ct_fingerprint() -> None:
    from leanseg.data.datasets import load_dataset

    fp = compute_fingerprint(load_dataset(SHARED_DATA / "Spleen_crop"))
    plan = plan_from_fingerprint(fp, DataConfig(), ModelConfig())
    assert fp.modality == "CT" and plan.normalization == ("ct",)
    lo, hi = plan.ct_window[0]
    assert -300 < lo < 100 < hi < 400  # spleen tissue, not air
    assert plan.target_spacing[2] == pytest.approx(5.0) and plan.strides[1][2] == 1
