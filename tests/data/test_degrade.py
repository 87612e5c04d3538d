"""Mixed-quality copies: severity 0 leaves an image alone, more severity changes it more, seeded, labels kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leanseg.data.degrade import degrade, degrade_dataset


def _image() -> np.ndarray:
    x = np.indices((24, 28, 20)).sum(0).astype(np.float32)
    return (100 + 5 * x + 50 * (x > 30))[None]


def test_severity_zero_is_the_image_and_more_severity_changes_it_more() -> None:
    image = _image()
    same, applied = degrade(image, 0.0, np.random.default_rng(0))
    assert np.array_equal(same, image) and applied == {"severity": 0.0}
    error = [float(np.abs(degrade(image, s, np.random.default_rng(1))[0] - image).mean()) for s in (0.1, 0.5, 1.0)]
    assert 0 < error[0] < error[1] < error[2]
    with pytest.raises(ValueError, match="outside"):
        degrade(image, 1.5, np.random.default_rng(0))


def test_without_spikes_the_same_draws_give_the_image_less_its_spike() -> None:
    image = _image()
    spiked, applied = degrade(image, 1.0, np.random.default_rng(3))
    plain, plain_applied = degrade(image, 1.0, np.random.default_rng(3), spikes=False)
    assert "spike_at" in applied and "spike_at" not in plain_applied  # at severity 1 the spike is certain
    assert {k: v for k, v in applied.items() if k != "spike_at"} == plain_applied
    assert not np.allclose(spiked, plain)
    never, never_applied = degrade(image, 0.5, np.random.default_rng(1))  # this draw adds no spike: nothing to leave out
    assert "spike_at" not in never_applied and np.array_equal(never, degrade(image, 0.5, np.random.default_rng(1), spikes=False)[0])
    mild, _ = degrade(image, 0.3, np.random.default_rng(3), spikes=False)
    assert np.abs(mild - image).mean() < np.abs(plain - image).mean()


def test_degraded_folder_is_seeded_keeps_labels_and_loads(tmp_path: Path) -> None:
    from leanseg.data.datasets import load_dataset
    from leanseg.data.io import read_image, read_label
    from leanseg.data.synthetic import generate_phantom_dataset

    src = generate_phantom_dataset(tmp_path / "src", num_cases=3, seed=0, sizes=((24, 28, 24),))
    a, b = degrade_dataset(src, tmp_path / "a", seed=4), degrade_dataset(src, tmp_path / "b", seed=4)
    record = json.loads((a / "degradation.json").read_text())
    assert record == json.loads((b / "degradation.json").read_text()) and len(record) == 3
    assert all(0 <= r["severity"] <= 1 for r in record.values())
    source, copy = load_dataset(src), load_dataset(a)
    assert [c.case_id for c in copy.cases] == [c.case_id for c in source.cases] and copy.labels == source.labels
    for s, c in zip(source.cases, copy.cases):
        assert np.array_equal(read_label(s.label).array, read_label(c.label).array)
        original, degraded = read_image(list(s.images)), read_image(list(c.images))
        assert np.allclose(original.affine, degraded.affine) and original.array.shape == degraded.array.shape
        assert not np.array_equal(original.array, degraded.array)
    from leanseg.errors import LeansegError

    with pytest.raises(LeansegError, match="source folder"):
        degrade_dataset(src, src)


def test_degrade_command_refuses_a_severity_over_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.data.synthetic import generate_phantom_dataset

    src = generate_phantom_dataset(tmp_path / "src", num_cases=2, seed=0, sizes=((24, 28, 24),))
    r = CliRunner().invoke(app, ["data", "degrade", "-d", str(src), "-o", str(tmp_path / "o"), "--max-severity", "2"])
    assert r.exit_code == 2 and "outside [0, 1]" in r.output and not (tmp_path / "o").exists()
    r = CliRunner().invoke(app, ["data", "degrade", "-d", str(src), "-o", str(tmp_path / "o"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o" / "imagesTr").iterdir())) == 2
