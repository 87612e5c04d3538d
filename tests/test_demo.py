from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    from leanseg.demo import run_demo

    mean = run_demo(tmp_path, minutes=0.75, num_cases=10, seed=0)
    for name in ("metrics.md", "metrics.csv", "metrics.json", "overlay.png", "run/checkpoint_final.pt", "run/training_curve.png"):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "predictions").glob("*.nii.gz"))) == 2
    assert mean["dice_1"] > 0.5  # the structure is found after 45 s of training
