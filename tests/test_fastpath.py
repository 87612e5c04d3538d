"""The CPU's fast path: when a run compiles, the compiled step against eager, resume, fallback, no recompiling per case."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from leanseg import fastpath
from leanseg.fastpath import FastPath, should_compile
from leanseg.nn.blocks import ConvNormAct
from leanseg.training.trainer import Trainer
from leanseg.utils import cpu_kind

CPU = torch.device("cpu")


def test_auto_compiles_long_cpu_runs_of_measured_families_where_the_cpu_measured_faster(monkeypatch) -> None:
    from leanseg.models.unet import ResidualUNet

    monkeypatch.setattr(fastpath, "cpu_kind", lambda: "avx512_bf16")
    monkeypatch.setitem(fastpath.COMPILE_PAYS, "avx512_bf16", True)
    net, long = ResidualUNet(1, 2, (4, 8), ((1, 1, 1), (2, 2, 2))), fastpath.COMPILE_MIN_ITERATIONS
    assert should_compile(None, CPU, iterations=long, model=net)
    assert should_compile(None, CPU, minutes=fastpath.COMPILE_MIN_MINUTES, model=net)
    assert not should_compile(None, CPU, iterations=long - 1, minutes=1.0, model=net)  # warm-up not repaid
    assert not should_compile(None, torch.device("cuda"), iterations=10**6, model=net)  # not measured there
    assert not should_compile(None, CPU, model=net)  # prediction: only where inference.compile asks
    assert not should_compile(None, CPU, iterations=long, model=_net())  # a family not measured compiled
    checkpointed = ResidualUNet(1, 2, (4, 8), ((1, 1, 1), (2, 2, 2)), gradient_checkpointing=True)
    assert not should_compile(None, CPU, iterations=long, model=checkpointed)  # not as measured
    assert should_compile(True, CPU) and not should_compile(False, CPU, iterations=10**6, model=net)  # a setting wins
    monkeypatch.setitem(fastpath.COMPILE_PAYS, "avx512_bf16", False)
    assert not should_compile(None, CPU, iterations=10**6, model=net)


def test_cpu_kind_reads_torch_s_capability_override(monkeypatch) -> None:
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert cpu_kind() == "avx2"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert cpu_kind() in ("amx", "avx512_bf16", "avx2")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ConvNormAct(1, 4), ConvNormAct(4, 2, act=False))


def test_compiled_path_runs_channels_last_and_matches_eager_in_outputs_and_gradients() -> None:
    torch._dynamo.reset()
    eager, net = _net(), _net()
    fast = FastPath(net, True, "train.compile")
    assert fast.compiled and net[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 8, 12, 10)
    a, b = eager(x), fast(x)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    a.square().mean().backward()
    b.square().mean().backward()
    for p, q in zip(eager.parameters(), net.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4)


def test_a_compiler_that_cannot_run_falls_back_to_eager_with_one_warning(monkeypatch) -> None:
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/g++",))
    net, x = _net(), torch.randn(1, 1, 8, 8, 8)
    want = _net()(x)
    fast = FastPath(net, True, "train.compile")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fast(x)
        fast(x)
    said = [str(w.message) for w in caught if "train.compile" in str(w.message)]
    assert len(said) == 1 and "C++ compiler" in said[0] and "eager" in said[0]
    assert not fast.compiled and net[0][0].weight.is_contiguous()
    torch.testing.assert_close(out, want)


def test_one_static_graph_serves_its_shape_and_other_shapes_run_eager() -> None:
    """Whole volumes differ in shape from case to case: none of them recompiles, and each gives eager's numbers."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = _net().eval()
    fast = FastPath(net, True, "inference.compile")
    with torch.no_grad():
        for shape in ((8, 8, 8), (12, 8, 16), (8, 8, 8), (16, 12, 8), (20, 16, 12)):
            x = torch.randn(1, 1, *shape)
            torch.testing.assert_close(fast(x), _net().eval()(x), atol=1e-5, rtol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1 and fast.compiled


def test_validation_during_compiled_training_leaves_the_step_compiled(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """Validation runs eager on NCDHW weights (whole volumes of every size); the step stays compiled, channels-last."""
    cfg = tiny_cfg.with_overrides({"train.compile": True, "train.val_every": 4})
    t = Trainer(cfg, phantoms, tmp_path / "run", show_progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = t.fit()
    assert not [w for w in caught if "train.compile is on" in str(w.message)]
    assert t.net.compiled and r.val["val_dice"] >= 0
    assert next(t.model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_final.pt", weights_only=True)["model"]


class Recording(Trainer):
    """Keeps every step's loss."""

    losses: list[float] = []

    def train_step(self, x, y):
        loss = super().train_step(x, y)
        type(self).losses.append(loss.item())
        return loss


def test_compiled_training_follows_eager_losses_and_resumes_to_the_same_weights(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    """fp32, so that the two paths differ by summation order only (bf16 rounding, amplified by Adam, would hide a bug)."""
    from leanseg.training import train

    cfg = tiny_cfg.with_overrides({"train.val_every": 10**6, "train.bf16": False})
    losses = {}
    for setting in (False, True):
        Recording.losses = []
        train(phantoms, tmp_path / str(setting), cfg.with_overrides({"train.compile": setting}), show_progress=False, trainer=Recording)
        losses[setting] = Recording.losses
    assert len(losses[True]) == 8
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), atol=1e-3, rtol=1e-3)

    class Interrupted(Trainer):
        def train_step(self, x, y):
            if self.iteration == 6:
                raise KeyboardInterrupt
            return super().train_step(x, y)

    on = cfg.with_overrides({"train.compile": True})
    with pytest.raises(KeyboardInterrupt):
        train(phantoms, tmp_path / "resumed", on, show_progress=False, trainer=Interrupted)
    resumed = _weights(Path(train(phantoms, tmp_path / "resumed", on, show_progress=False).run_dir))
    for k, v in _weights(tmp_path / "True").items():
        torch.testing.assert_close(resumed[k], v, atol=1e-6, rtol=1e-6)
