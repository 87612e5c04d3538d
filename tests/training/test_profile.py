from pathlib import Path

from leanseg.training.profile import profile_training_step


def test_profile_times_each_part_of_a_real_step(phantoms: Path, tiny_cfg) -> None:
    p = profile_training_step(phantoms, tiny_cfg, steps=2, warmup=1)
    parts = ("data", "forward", "loss", "backward", "optimizer")
    assert all(p[k] > 0 for k in parts)
    assert abs(p["total"] - sum(p[k] for k in parts)) < 1e-9
    assert p["batch_cpu_seconds"] > 0
    assert p["parameters"] > 1000  # the planned model's weights were counted
    shares = p["convolution_share"]
    assert "16x16x16" in shares and "8x8x8" in shares  # tiny_cfg's patch and its first pooled level
    assert abs(sum(shares.values()) - 1) < 1e-9 and all(0 <= v <= 1 for v in shares.values())


def test_profile_can_take_its_steps_in_channels_last_3d(phantoms: Path, tiny_cfg, monkeypatch) -> None:
    import torch

    from leanseg.training.trainer import Trainer

    seen: list[bool] = []
    forward = Trainer.forward

    def spying(self, x):  # are the weights of the convolutions with several input channels laid out channels-last?
        weights = [w for w in self.model.parameters() if w.dim() == 5 and w.shape[1] > 1]
        seen.append(bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in weights))
        return forward(self, x)

    monkeypatch.setattr(Trainer, "forward", spying)
    for layout in (False, True):
        p = profile_training_step(phantoms, tiny_cfg, steps=1, warmup=0, channels_last=layout)
        assert p["forward"] > 0 and seen[0] is layout
        seen.clear()
