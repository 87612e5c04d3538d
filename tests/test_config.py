from pathlib import Path

import pytest

from leanseg.config import ExperimentConfig
from leanseg.errors import LeansegError


def test_yaml_round_trip_keeps_every_value(tmp_path: Path) -> None:
    cfg = ExperimentConfig().with_overrides(["train.lr=0.003", "data.patch_size=[40,56,40]", "model.strides=[[1,1,1],[2,2,1]]"])
    cfg.save(tmp_path / "c.yaml")
    back = ExperimentConfig.load(tmp_path / "c.yaml")
    assert back == cfg
    assert back.data.patch_size == (40, 56, 40)
    assert back.model.strides == ((1, 1, 1), (2, 2, 1))
    assert back.train.lr == 0.003


def test_override_types_are_coerced_and_checked() -> None:
    cfg = ExperimentConfig().with_overrides(["train.lr=1", "augment.flip=0"])
    assert isinstance(cfg.train.lr, float) and cfg.augment.flip == 0.0
    with pytest.raises(LeansegError, match="must be of type int"):
        ExperimentConfig().with_overrides(["train.iterations=fast"])


@pytest.mark.parametrize("bad", ["train.lrr=0.1", "nosuch.key=1", "train=3"])
def test_unknown_keys_are_refused_with_the_valid_ones(bad: str) -> None:
    with pytest.raises(LeansegError, match="Unknown config key|must be a mapping|must look like"):
        ExperimentConfig().with_overrides([bad])


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(LeansegError, match="bad.yaml"):
        ExperimentConfig.load(p)


# --- every numeric setting, given 0, a negative, NaN and inf: a run or one sentence, never a traceback ----------------

FUZZ = ("0", "-1", ".nan", ".inf")
TRAINED_SECTIONS = ("data.", "augment.", "model.", "train.", "inference.")  # what `leanseg train` (and its validation) reads


def _numeric_settings() -> list[tuple[str, str]]:
    """(dotted key, shape) of every numeric field of the typed config: a number, a triple, a list, or a list of triples."""
    import dataclasses
    import types
    import typing

    def walk(cls: type, prefix: str):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, f"{prefix}{f.name}.")
                continue
            union = typing.get_origin(tp) in (typing.Union, types.UnionType)
            base = [a for a in typing.get_args(tp) if a is not type(None)][0] if union else tp
            inner = typing.get_args(base) if typing.get_origin(base) is tuple else ()
            if base in (int, float):
                yield f"{prefix}{f.name}", "{v}"
            elif inner and inner[0] in (int, float):
                yield f"{prefix}{f.name}", "[{v},{v},{v}]"
            elif inner and typing.get_origin(inner[0]) is tuple:
                yield f"{prefix}{f.name}", "[[{v},{v},{v}],[{v},{v},{v}],[{v},{v},{v}]]"

    return list(walk(ExperimentConfig, ""))


def test_the_fuzz_covers_every_numeric_setting() -> None:
    keys = dict(_numeric_settings())
    assert len(keys) >= 70 and {"train.lr", "data.patch_size", "model.strides", "search.architecture.start_prob"} <= set(keys)


def test_every_bad_number_is_one_sentence_with_its_range_and_exit_2(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    tiny_cfg.save(tmp_path / "tiny.yaml")
    accepted = []
    for key, shape in _numeric_settings():
        for v in FUZZ:
            setting = f"{key}={shape.format(v=v)}"
            try:
                ExperimentConfig().with_overrides([setting])
            except LeansegError as e:
                assert "must be" in str(e) and key in str(e) and "\n" not in str(e), str(e)
                continue
            accepted.append(setting)
            assert v == "0" or key == "data.fold" and v == "-1", f"{setting} was accepted"  # NaN, inf and negatives never pass
        if any(key.startswith(s) for s in TRAINED_SECTIONS) and not any(a.startswith(key + "=") for a in accepted):
            # one refusal through the command line per trained key: a sentence and exit 2, before anything is written
            r = CliRunner().invoke(
                app,
                [
                    "train",
                    "-d",
                    str(phantoms),
                    "-o",
                    str(tmp_path / "no"),
                    "--config",
                    str(tmp_path / "tiny.yaml"),
                    "--set",
                    f"{key}={shape.format(v='-1')}",
                ],
            )
            assert r.exit_code == 2 and r.output.startswith("error:") and "Traceback" not in r.output, (key, r.output)
    assert not (tmp_path / "no").exists()
    # the values the config accepts in what training reads: together, they train (and validate) without a traceback
    trained = [a for a in accepted if a.startswith(TRAINED_SECTIONS)]
    assert len(trained) >= 15
    sets = [x for a in trained for x in ("--set", a)] + ["--set", "train.iterations=2", "--set", "train.val_every=2"]
    r = CliRunner().invoke(app, ["train", "-d", str(phantoms), "-o", str(tmp_path / "run"), "--config", str(tmp_path / "tiny.yaml"), *sets])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("setting", "sentence"),
    [
        ("train.batch_size=0", r"train.batch_size=0 is out of range: it must be >= 1"),
        ("train.lr=.nan", r"train.lr=nan must be a finite number"),
        ("train.weight_decay=-1", r"must be >= 0"),
        ("train.num_workers=-1", r"must be >= 0"),
        ("model.kernel_size=0", r"must be an odd whole number >= 1"),
        ("data.patch_size=[0,0,0]", r"must be >= 1"),
        ("data.target_spacing=[0,0,0]", r"must be > 0"),
        ("data.orientation=XYZ", r"one of each pair L/R, P/A, I/S"),
        ("train.val_every=0", r"must be >= 1"),
        ("train.checkpoint_every=0", r"must be >= 1"),
        ("augment.flip=7", r"augment.flip=7.0 is out of range: it must be in \[0, 1\]"),
        ("data.foreground_oversample=5", r"must be in \[0, 1\]"),
    ],
)
def test_the_issues_bad_numbers_are_sentences(setting: str, sentence: str) -> None:
    with pytest.raises(LeansegError, match=sentence):
        ExperimentConfig().with_overrides([setting])


def test_a_number_yaml_reads_as_a_string_is_a_number() -> None:
    assert ExperimentConfig().with_overrides(["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(LeansegError, match="must be a number"):
        ExperimentConfig().with_overrides(["train.lr=fast"])
