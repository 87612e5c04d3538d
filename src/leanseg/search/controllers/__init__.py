"""Search controllers behind one ask/tell contract (:class:`~leanseg.search.controllers.base.Controller`).

Each lives in its own module and registers itself; importing this package registers them all:

* ``ppo`` (:mod:`.ppo`): Yang et al. 2019's RNN + PPO over training strategies;
* ``hill`` / ``hill-continuous`` (:mod:`.hill`): discrete and continuous hill climbing;
* ``random`` (:mod:`.random_search`): uniform;
* ``tpe`` (:mod:`.tpe`): Optuna's Tree-structured Parzen Estimator;
* ``enas`` (:mod:`.enas`): the ENAS LSTM + REINFORCE over architectures (Pham et al. 2018; Bae et al. 2019).

:class:`~leanseg.search.controllers.warmup.WarmupController` composes two of them.
"""

from typing import Any

from leanseg.search.controllers import enas, hill, ppo, random_search, tpe  # noqa: F401  (register the controllers)
from leanseg.search.controllers.base import CONTROLLERS, Candidate, Controller
from leanseg.search.controllers.enas import EnasController
from leanseg.search.controllers.hill import ContinuousHillClimbing, HillClimbing
from leanseg.search.controllers.ppo import PPOController, StrategyRNN, ppo_clip_loss
from leanseg.search.controllers.random_search import RandomSearch
from leanseg.search.controllers.tpe import TPEController
from leanseg.search.controllers.warmup import WarmupController
from leanseg.search.space import SearchSpace


def make_controller(name: str, space: SearchSpace, seed: int = 0, start: Any = None, **options: Any) -> Controller:
    """The registered controller ``name`` over ``space`` (see :data:`CONTROLLERS` for the names)."""
    return CONTROLLERS.create(name, space, seed=seed, start=start, **options)


__all__ = [
    "CONTROLLERS",
    "Candidate",
    "ContinuousHillClimbing",
    "Controller",
    "EnasController",
    "HillClimbing",
    "PPOController",
    "RandomSearch",
    "StrategyRNN",
    "TPEController",
    "WarmupController",
    "make_controller",
    "ppo_clip_loss",
]
