import pytest
import torch

from leanseg.config import TrainConfig
from leanseg.errors import LeansegError
from leanseg.training.schedule import make_optimizer


def test_each_optimizer_applies_its_weight_decay() -> None:
    """One step on a zero gradient: only weight decay moves the weight, by the rule of each optimiser."""
    moved = {}
    for name in ("sgd", "adam", "adamw"):
        w = torch.nn.Parameter(torch.ones(3))
        opt = make_optimizer([w], TrainConfig(optimizer=name, lr=0.1, weight_decay=0.5))
        w.grad = torch.zeros(3)
        opt.step()
        moved[name] = float(1 - w.detach()[0])
    assert type(make_optimizer([torch.nn.Parameter(torch.ones(1))], TrainConfig(optimizer="adamw"))) is torch.optim.AdamW
    assert moved["adamw"] == pytest.approx(0.1 * 0.5)  # decoupled: lr * decay * w
    assert moved["adam"] == pytest.approx(0.1, rel=1e-3)  # L2 as a gradient, normalised by Adam: about lr
    assert moved["sgd"] == pytest.approx(0.1 * 0.5 * 1.99)  # L2 gradient with Nesterov's look-ahead (momentum 0.99)


def test_an_unknown_optimizer_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(LeansegError, match="use sgd, adam or adamw"):
        make_optimizer([torch.nn.Parameter(torch.ones(1))], TrainConfig(optimizer="lion"))


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_follows_the_cpu_unless_set_and_a_forced_emulated_bf16_is_warned_about(monkeypatch, fast: bool) -> None:
    import warnings

    from leanseg import utils
    from leanseg.training.schedule import use_bf16

    monkeypatch.setattr(utils, "cpu_has_fast_bf16", lambda: fast)
    monkeypatch.setattr(utils, "_WARNED_BF16", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where bf16 is chosen by the CPU or turned off
        assert use_bf16(TrainConfig(bf16=None)) is fast
        assert use_bf16(TrainConfig(bf16=False)) is False
        if fast:
            assert use_bf16(TrainConfig(bf16=True)) is True
    if not fast:
        with pytest.warns(UserWarning, match="train.bf16 asks for bf16, but this CPU has no native bf16"):
            assert use_bf16(TrainConfig(bf16=True)) is True
