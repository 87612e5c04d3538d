"""The worked examples of docs/extending.md run as written, and the README stays a user's page."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_every_example_of_the_extending_guide_runs(i: int) -> None:
    from leanseg.registry import MODELS
    from leanseg.search.controllers.base import CONTROLLERS

    before = (set(MODELS.names()), set(CONTROLLERS.names()))
    try:
        exec(compile(BLOCKS[i], f"docs/extending.md block {i}", "exec"), {})
    finally:  # the examples register parts; leave the registries as they were
        for reg, names in zip((MODELS, CONTROLLERS), before):
            for n in set(reg.names()) - names:
                reg._factories.pop(n)
                reg._settings.pop(n, None)


def test_the_guide_has_its_four_examples_and_the_readme_its_two_setup_commands() -> None:
    assert len(BLOCKS) == 4
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.count("pip install torch==2.13.0 -e . && leanseg demo") == 1
    test_command = 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -m "not slow"'
    assert readme.count(test_command) == 1 and test_command in (ROOT / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")
    for link in re.findall(r"\]\(((?:docs|benchmarks)/[^)]+)\)", readme):
        assert (ROOT / link).exists(), link
