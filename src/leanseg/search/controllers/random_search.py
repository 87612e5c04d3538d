"""``random``: uniform over the unit cube, the reference every learned controller must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from leanseg.search.controllers.base import CONTROLLERS, Controller


@CONTROLLERS.register("random")
class RandomSearch(Controller):
    name = "random"

    def _propose(self) -> tuple[np.ndarray, dict[str, Any]]:
        return self.rng.random(self.space.dim), {}
