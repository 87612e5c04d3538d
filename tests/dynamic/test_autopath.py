"""AutoPath: gated DeepLabV3 blocks, heuristic strategies, reward and policy-gradient pieces, policies bound to their model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.dynamic.evaluate import (
    backward_elimination,
    best_fixed_paths,
    blocks_used_histogram,
    evaluate_paths,
    macs_share,
    mask_table,
    matched_heuristics,
)
from leanseg.dynamic.policy import PolicyNet, build_policy, load_policy, save_policy, weights_fingerprint
from leanseg.dynamic.reinforce import (
    advantages,
    block_costs,
    curriculum_decided,
    dice_reward,
    greedy_actions,
    path_reward,
    policy_loss,
    sample_actions,
    train_policy,
    voxel_reward,
)
from leanseg.dynamic.strategies import drop_first, drop_last, drop_n, drop_random, every_mask, level_masks, sweep_masks
from leanseg.errors import LeansegError
from leanseg.models.deeplab3d import DeepLab3D


def tiny(depth: int = 18, seed: int = 0) -> DeepLab3D:
    torch.manual_seed(seed)
    return DeepLab3D(1, 3, depth=depth, base_features=4, aspp_features=4, decoder_features=8).eval()


@pytest.mark.parametrize("depth,blocks", [(18, 8), (50, 16)])
def test_backbones_have_the_papers_block_counts_and_all_keep_is_exact(depth: int, blocks: int) -> None:
    net = tiny(depth)
    assert net.num_gated_blocks == blocks
    x = torch.randn(2, 1, 16, 16, 12)
    with torch.no_grad():
        plain = net(x)
        assert torch.equal(net(x, torch.ones(2, blocks, dtype=torch.bool)), plain)
        assert torch.equal(net(x, torch.ones(blocks)), plain)
        assert not torch.allclose(net(x, drop_n(blocks, blocks - 1)), plain)


def test_a_dropped_block_is_not_called_and_a_mixed_batch_runs_only_the_keepers() -> None:
    net = tiny()
    x = torch.randn(2, 1, 16, 16, 16)
    seen: dict[int, list[int]] = {}
    for i, blk in enumerate(net.blocks):
        blk.residual.register_forward_hook(lambda m, inp, out, i=i: seen.setdefault(i, []).append(inp[0].shape[0]))
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[:, 3] = False  # block 3 dropped for both samples
    keep[0, 5] = False  # block 5 dropped for sample 0 only
    with torch.no_grad():
        net(x, keep)
    assert 3 not in seen
    assert seen[5] == [1]
    assert all(seen[i] == [2] for i in (0, 1, 2, 4, 6, 7))
    assert [b.calls for b in net.blocks] == [1, 1, 1, 0, 1, 1, 1, 1]


def test_dropping_runs_only_the_shortcut_per_sample() -> None:
    net = tiny()
    x = torch.randn(2, 1, 16, 16, 16)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[0, 2] = False  # block 2 opens stage 2: its shortcut is a strided projection
    with torch.no_grad():
        mixed = net(x, keep)
        alone = net(x[:1], keep[:1])
        h = net.stem(x[:1])
        h = net.blocks[1](net.blocks[0](h))
        by_hand = net.blocks[2].act(net.blocks[2].shortcut(h))
        assert torch.allclose(net.blocks[2](h, torch.tensor([False])), by_hand)
    assert torch.allclose(mixed[:1], alone, atol=1e-5)


def test_anisotropic_plan_keeps_z_at_full_resolution() -> None:
    from leanseg.config import ModelConfig
    from leanseg.registry import MODELS

    net = MODELS.create(
        "deeplab3d_r18",
        1,
        2,
        ModelConfig(name="deeplab3d_r18", base_features=4),
        features=(4, 8, 16),
        strides=((1, 1, 1), (2, 2, 1), (2, 2, 1)),
    )
    assert net.divisor == (4, 4, 1)
    assert net(torch.randn(2, 1, 8, 8, 5)).shape == (2, 2, 8, 8, 5)


def test_stochastic_depth_drops_blocks_only_in_training() -> None:
    torch.manual_seed(0)
    net = DeepLab3D(1, 2, base_features=4, aspp_features=4, decoder_features=8, drop_prob=0.5).train()
    net(torch.randn(2, 1, 8, 8, 8))
    assert sum(b.calls for b in net.blocks) < 8
    net.eval()
    for b in net.blocks:
        b.calls = 0
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8, 8))
    assert [b.calls for b in net.blocks] == [1] * 8


def test_linear_stochastic_depth_spares_the_first_block() -> None:
    """drop_rule linear: block l of N dropped with rate * (l - 1) / (N - 1); counted over many batches."""
    torch.manual_seed(0)
    net = DeepLab3D(1, 2, base_features=4, aspp_features=4, decoder_features=8, drop_prob=0.7, drop_rule="linear")
    assert torch.allclose(net.block_drop_probs, torch.arange(8) * 0.1)
    net.train()
    trials = 60
    for _ in range(trials):
        net(torch.randn(1, 1, 8, 8, 8))
    calls = [b.calls for b in net.blocks]
    assert calls[0] == trials  # never dropped
    assert calls[-1] < trials * 0.5  # dropped with p = 0.7
    assert calls[0] > calls[3] > calls[-1]
    with pytest.raises(ValueError, match="drop_rule"):
        DeepLab3D(1, 2, drop_rule="depth")


def test_heuristic_strategies() -> None:
    assert drop_n(4, 2).tolist() == [True, True, False, True]
    assert drop_first(4, 3).tolist() == [False, False, False, True]
    assert drop_last(4, 1).tolist() == [True, True, True, False]
    a = drop_random(8, 3, np.random.default_rng(5))
    assert int((~a).sum()) == 3
    assert torch.equal(a, drop_random(8, 3, np.random.default_rng(5)))
    with pytest.raises(ValueError):
        drop_n(4, 4)
    masks = sweep_masks(8, repeats=3)
    assert len(masks) == 8 + 7 * (2 + 3)
    assert all(int((~k).sum()) == dropped for _, _, dropped, k in masks)
    every = every_mask(4)
    assert len({tuple(k.tolist()) for _, _, _, k in every}) == 16  # each mask once
    assert all(int((~k).sum()) == dropped for _, _, dropped, k in every)
    assert every[5][3].tolist() == [True, False, True, False]  # mask 5 = 0b0101: blocks 1 and 3 kept
    with pytest.raises(ValueError, match="2\\^13"):
        every_mask(13)


def test_level_masks_are_every_mask_up_to_the_limit_and_a_seeded_sample_above_it() -> None:
    assert level_masks(8, per_level=3).tolist() == torch.stack([m[3] for m in every_mask(8)]).tolist()
    masks = level_masks(16, per_level=5, seed=1)
    assert torch.equal(masks, level_masks(16, per_level=5, seed=1))
    assert len({tuple(k.tolist()) for k in masks}) == len(masks)  # each mask once
    kept = masks.sum(1)
    assert [int((kept == k).sum()) for k in (0, 1, 8, 15, 16)] == [1, 7, 7, 7, 1]  # level 0 and 16 have one mask each
    assert any(torch.equal(k, drop_last(16, 6)) for k in masks) and any(torch.equal(k, drop_first(16, 6)) for k in masks)


def test_backward_elimination_drops_the_least_harmful_block_at_each_step() -> None:
    model = tiny()
    g = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=g), torch.randint(0, 3, (16, 16, 16), generator=g)) for i in range(2)]
    path = backward_elimination(model, cases, [1, 2], False)
    assert path.shape == (9, 8) and path[0].all() and not path[-1].any()
    assert path.sum(1).tolist() == list(range(8, -1, -1))
    assert all(bool((path[i + 1] <= path[i]).all()) for i in range(8))  # each step only drops
    first = torch.stack([drop_n(8, i) for i in range(8)])
    best = first[int(np.argmax(mask_table(model, cases, first, [1, 2], False).mean(1)))]
    assert torch.equal(path[1], best)


@pytest.mark.parametrize("depth", [18, 50])
def test_best_fixed_paths_give_one_path_per_level_and_the_full_network_first(depth: int) -> None:
    model = tiny(depth)
    g = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=g), torch.randint(0, 3, (16, 16, 16), generator=g)) for i in range(2)]
    best = best_fixed_paths(model, cases, [1, 2], False)
    n = model.num_gated_blocks
    assert [b["blocks_used"] for b in best] == list(range(n, -1, -1)) and best[0]["path"] == "1" * n
    assert all(b["path"].count("1") == b["blocks_used"] for b in best)
    keeps = torch.tensor([[c == "1" for c in b["path"]] for b in best])
    assert np.allclose([b["dice"] for b in best], mask_table(model, cases, keeps, [1, 2], False).mean(1))
    if n <= 12:  # an exhaustive search: never below the same level's DropLastN
        last = torch.stack([drop_last(n, n - b["blocks_used"]) for b in best])
        assert all(b["dice"] >= d - 1e-9 for b, d in zip(best, mask_table(model, cases, last, [1, 2], False).mean(1)))
    else:  # greedy backward elimination: each path drops one block of the one before
        assert all(bool((keeps[i + 1] <= keeps[i]).all()) for i in range(n))


def test_matched_heuristics_drop_on_each_image_what_the_policy_dropped_there() -> None:
    model = tiny()
    g = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=g), torch.randint(0, 3, (16, 16, 16), generator=g)) for i in range(3)]
    n, rng = model.num_gated_blocks, np.random.default_rng(0)

    def dice(keep_for) -> float:
        return float(np.mean([r["dice"] for r in evaluate_paths(model, cases, keep_for, [1, 2], False)]))

    full = dice(lambda _c, _i: torch.ones(n, dtype=torch.bool))
    none = matched_heuristics(model, cases, {"c0": 0, "c1": 0, "c2": 0}, [1, 2], 2, rng, False)
    assert none == {"DropFirstN": full, "DropLastN": full, "DropRandomN": full, "DropRandomN_std": 0.0}
    mixed = {"c0": 1, "c1": 3, "c2": 5}
    m = matched_heuristics(model, cases, mixed, [1, 2], 2, rng, False)
    assert m["DropFirstN"] == dice(lambda c, _i: drop_first(n, mixed[c]))
    assert m["DropLastN"] == dice(lambda c, _i: drop_last(n, mixed[c]))
    assert m["DropFirstN"] != m["DropLastN"]  # the two heuristics do drop different blocks
    rows = evaluate_paths(model, cases, lambda c, _i: drop_last(n, mixed[c]), [1, 2], False)
    assert blocks_used_histogram(rows, n) == [0, 0, 0, 1, 0, 1, 0, 1, 0]


def test_voxel_reward_worked_by_hand() -> None:
    target = torch.tensor([[[0, 1], [1, 2]]])  # 4 voxels
    pred = torch.stack([torch.tensor([[[0, 1], [1, 0]]]), target])  # 3 right; 4 right
    r = voxel_reward(pred, target, torch.tensor([2, 4]), total=4, tau=2.0)
    # 0.75 * (1 - (2/4)^2) - 2 * 0.25 = 0.0625 ; 1 * (1 - 1) - 0 = 0
    assert torch.allclose(r, torch.tensor([0.0625, 0.0]))


def test_dice_reward_counts_the_foreground_only() -> None:
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, :2, :2, :2] = 1  # 8 foreground voxels of 64
    miss = target.clone()
    miss[0, 0, 0, :2] = 0  # 2 of them missed: Dice 12/14
    pred = torch.stack([miss[0], target[0]])
    r = dice_reward(pred, target, torch.tensor([2, 4]), total=4, tau=2.0, classes=[1, 2])  # class 2: empty in both, counts 1
    acc = (12 / 14 + 1) / 2
    assert torch.allclose(r, torch.tensor([acc * 0.75 - 2 * (1 - acc), 0.0]))
    # the voxel reward sees the same miss as 2/64 wrong
    assert voxel_reward(pred, target, torch.tensor([2, 4]), 4, 2.0)[0] == pytest.approx(62 / 64 * 0.75 - 2 * 2 / 64)
    from leanseg.config import AutoPathConfig

    assert torch.equal(path_reward(AutoPathConfig(tau=2.0, reward="dice"), pred, target, torch.tensor([2, 4]), 4, [1, 2]), r)
    with pytest.raises(LeansegError, match="autopath.reward"):
        path_reward(AutoPathConfig(reward="vdc"), pred, target, torch.tensor([2, 4]), 4, [1])


def test_advantages_subtract_the_greedy_reward_and_normalise_per_image() -> None:
    r = torch.tensor([1.0, 3.0, 2.0])  # two samples, then the greedy path
    assert advantages(r, 2, False).tolist() == [-1.0, 1.0]
    assert torch.allclose(advantages(r, 2, True), torch.tensor([-1.0, 1.0]) / r.std(unbiased=False))
    assert torch.allclose(advantages(100 * r, 2, True), advantages(r, 2, True))  # the image's reward scale is gone
    assert advantages(torch.ones(3), 2, True).tolist() == [0.0, 0.0]


def test_block_costs_are_the_residual_branches_multiply_accumulates_counted_by_hand() -> None:
    net = tiny()  # base width 4; the stem halves 16^3 to 8^3; stage 2 halves again
    macs = net.block_macs((16, 16, 16))
    assert macs[0] == 2 * 8**3 * 4 * 4 * 27  # two 3x3x3 convolutions, 4 -> 4 channels, 8^3 outputs
    assert macs[2] == 4**3 * 8 * (4 + 8) * 27  # strided 4 -> 8, then 8 -> 8, 4^3 outputs
    assert macs[6] == 4**3 * 32 * (16 + 32) * 27  # stage 4: dilated, not strided, 16 -> 32 channels
    assert macs_share(macs.tolist(), "11111100") == pytest.approx(float(macs[:6].sum() / macs.sum()))
    assert torch.equal(block_costs(net, "blocks", (16, 16, 16)), torch.ones(8))
    scaled = block_costs(net, "macs", (16, 16, 16))
    assert scaled.sum().item() == pytest.approx(8) and torch.allclose(scaled, (macs * 8 / macs.sum()).float())
    with pytest.raises(LeansegError, match="autopath.cost"):
        block_costs(net, "flops", (16, 16, 16))
    # with costs, dropping the expensive last block earns more than dropping the cheap third one, at equal accuracy
    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    keep = torch.ones(2, 8)
    keep[0, 7], keep[1, 2] = 0, 0
    r = voxel_reward(target.expand(2, -1, -1, -1), target, keep @ scaled, float(scaled.sum()), tau=1.0)
    assert r[0] > r[1]


def test_policy_loss_and_gradient_worked_by_hand() -> None:
    z = torch.tensor([[math.log(0.2 / 0.8), math.log(0.6 / 0.4)]], requires_grad=True)
    probs = torch.sigmoid(z)  # [0.2, 0.6]
    actions = torch.tensor([[1.0, 0.0]])
    decided = torch.tensor([False, True])
    beta = 0.1
    loss, ent = policy_loss(probs, actions, decided, torch.tensor([2.0]), beta)
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert loss.item() == pytest.approx(-2.0 * math.log(0.4) - beta * h, rel=1e-6)
    assert ent.item() == pytest.approx(h, rel=1e-6)
    loss.backward()
    # d/dz of -A log(1 - p) = A p ; of -beta H(p) = beta * p(1-p) * log(p / (1-p))
    assert z.grad[0, 0].item() == 0.0  # undecided block: no gradient
    assert z.grad[0, 1].item() == pytest.approx(2.0 * 0.6 + beta * 0.24 * math.log(1.5), rel=1e-5)


def test_curriculum_decides_the_last_blocks_first() -> None:
    assert curriculum_decided(0, 10, 4).tolist() == [False, False, False, True]
    assert curriculum_decided(25, 10, 4).tolist() == [False, True, True, True]
    assert curriculum_decided(10_000, 10, 4).all()


def test_actions_never_drop_undecided_blocks() -> None:
    probs = torch.full((64, 4), 0.9)
    decided = torch.tensor([False, False, True, True])
    a = sample_actions(probs, decided, torch.Generator().manual_seed(0))
    assert a[:, :2].sum() == 0 and a[:, 2:].mean() > 0.7
    assert greedy_actions(torch.tensor([[0.9, 0.4, 0.6, 0.5]]), torch.ones(4, dtype=torch.bool)).tolist() == [[1, 0, 1, 0]]


def test_policy_probabilities_are_bounded() -> None:
    pol = PolicyNet(1, 5, size=(8, 8, 8), features=(4,), bound=0.1)
    torch.nn.init.constant_(pol.head.bias, 50.0)
    p = pol(torch.randn(3, 1, 20, 18, 16))
    assert p.shape == (3, 5) and torch.allclose(p, torch.full_like(p, 0.9))
    assert not pol.keep_mask(torch.randn(1, 1, 8, 8, 8)).any()
    with pytest.raises(LeansegError, match="too small"):
        PolicyNet(1, 5, size=(8, 8, 8), features=(4, 8, 16))


def test_a_stem_policy_sees_the_segmentation_networks_stem_features(tmp_path: Path) -> None:
    from leanseg.config import AutoPathConfig

    model = tiny()
    image = torch.randn(1, 1, 16, 16, 16)
    stem = model.stem(image)
    cfg = AutoPathConfig(policy_input="stem", policy_size=(8, 8, 8), policy_features=(4,))
    pol = build_policy(stem.shape[1], 8, cfg)
    assert torch.equal(pol.observe(model, image), stem.detach()) and torch.equal(pol.choose(model, image), pol.keep_mask(stem))
    loaded, _ = load_policy(save_policy(tmp_path / "p.pt", pol, model, cfg), model)
    assert loaded.source == "stem" and torch.equal(loaded.choose(model, image), pol.choose(model, image))
    image_pol = build_policy(1, 8, AutoPathConfig(policy_size=(8, 8, 8), policy_features=(4,)))
    assert torch.equal(image_pol.observe(model, image), image)
    with pytest.raises(LeansegError, match="policy_input"):
        PolicyNet(1, 8, size=(8, 8, 8), features=(4,), source="logits")


def test_stem_policy_with_the_dice_reward_trains() -> None:
    from leanseg.config import AutoPathConfig

    model = tiny()
    gen = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=gen), torch.randint(0, 3, (16, 16, 16), generator=gen)) for i in range(2)]
    cfg = AutoPathConfig(
        tau=0.0, reward="dice", policy_input="stem", normalise=True, policy_size=(8, 8, 8), policy_features=(4,),
        steps=30, stage_steps=0, images_per_step=2, lr=0.05, num_threads=1,
    )  # fmt: skip
    res = train_policy(model, cases, cfg)
    assert res.policy.source == "stem" and res.policy.features[0][0].in_channels == model.stem(cases[0][1][None]).shape[1]
    with torch.no_grad():
        p = res.policy(res.policy.observe(model, cases[0][1][None]))[0]
    assert p.mean() > 0.5  # tau 0: every dropped block is rewarded, and with no curriculum all of them are decided


def test_mask_table_scores_every_mask_on_every_case_as_evaluate_paths_does() -> None:
    model = tiny()
    gen = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=gen), torch.randint(0, 3, (16, 16, 16), generator=gen)) for i in range(2)]
    keeps = torch.stack([m[3] for m in every_mask(8)])[::37]  # 7 masks, in batches of 3
    table = mask_table(model, cases, keeps, [1, 2], False, batch=3)
    assert table.shape == (len(keeps), 2)
    for i, keep in enumerate(keeps):
        rows = evaluate_paths(model, cases, lambda _c, _i, k=keep: k, [1, 2], False)
        assert table[i].tolist() == pytest.approx([r["dice"] for r in rows], abs=1e-6)
    by_class = mask_table(model, cases, keeps, [1, 2], False, batch=3, per_class=True)
    assert by_class.shape == (len(keeps), 2, 2)
    assert np.nanmean(by_class, axis=2) == pytest.approx(table, abs=1e-6)  # the case Dice is the mean of the classes'


def test_policy_refuses_another_model(tmp_path: Path) -> None:
    from leanseg.config import AutoPathConfig

    model, other = tiny(seed=0), tiny(seed=1)
    pol = PolicyNet(1, 8, size=(8, 8, 8), features=(4,))
    path = save_policy(tmp_path / "p.pt", pol, model, AutoPathConfig(policy_size=(8, 8, 8), policy_features=(4,)))
    loaded, _ = load_policy(path, model)
    x = torch.randn(1, 1, 12, 12, 12)
    assert torch.equal(loaded(x), pol.eval()(x))
    assert weights_fingerprint(model) != weights_fingerprint(other)
    with pytest.raises(LeansegError, match="trained for another segmentation model"):
        load_policy(path, other)
    with pytest.raises(LeansegError, match="does not exist"):
        load_policy(tmp_path / "missing.pt", model)


def test_without_an_error_penalty_the_policy_learns_to_drop() -> None:
    """tau = 0 rewards every dropped block, so REINFORCE must raise the drop probabilities it decides."""
    from leanseg.config import AutoPathConfig

    model = tiny()
    gen = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=gen), torch.randint(0, 3, (16, 16, 16), generator=gen)) for i in range(3)]
    cfg = AutoPathConfig(
        tau=0.0, policy_size=(8, 8, 8), policy_features=(4,), steps=30, stage_steps=1000, images_per_step=2, lr=0.05, num_threads=1
    )
    res = train_policy(model, cases, cfg)
    assert len(res.history) == 30 and all(r["stage"] == 1 for r in res.history)
    with torch.no_grad():
        p = res.policy(cases[0][1][None])[0]
    assert p[-1] > 0.5  # the decided (last) block: from ~0.12 at the start to mostly dropped
    assert p[:-1].max() < 0.2  # undecided blocks are never sampled, so they stay where they began


def test_train_policy_sweep_and_predict_with_a_policy_from_the_command_line(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.training import train

    cfg = tiny_cfg.with_overrides({"model.name": "deeplab3d_r18", "model.deep_supervision": False, "train.iterations": 4})
    run, other = tmp_path / "run", tmp_path / "other"
    train(phantoms, run, cfg, show_progress=False)
    train(phantoms, other, cfg.with_overrides({"train.seed": 1}), show_progress=False)
    runner = CliRunner()
    small = [
        "--set",
        "autopath.steps=3",
        "--set",
        "autopath.images_per_step=1",
        "--set",
        "autopath.policy_size=[8,8,8]",
        "--set",
        "autopath.policy_features=[4]",
    ]
    r = runner.invoke(app, ["train-policy", "-m", str(run), "-d", str(phantoms), "--tau", "20", *small])
    assert r.exit_code == 0, r.output
    policy = run / "policies" / "policy_tau20.pt"
    assert policy.is_file() and "blocks used" in " ".join(r.output.split()) and (run / "policies" / "policy_tau20.json").is_file()

    r = runner.invoke(app, ["drop-sweep", "-m", str(run), "-d", str(phantoms), "-o", str(tmp_path / "sweep"), "--repeats", "1", "--search"])
    assert r.exit_code == 0, r.output
    import json

    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(sweep["rows"]) == 1 + 8 + 7 * 3 and (tmp_path / "sweep" / "sweep.png").is_file()
    best = {b["blocks_used"]: b for b in sweep["best_fixed"]}
    assert sorted(best) == list(range(9)) and "best fixed path" in r.output
    # each level's best fixed path is at least as good as that level's DropLastN and DropFirstN
    for row in sweep["rows"]:
        if row["strategy"] in ("DropLastN", "DropFirstN"):
            assert best[8 - row["blocks_dropped"]]["dice"] >= row["dice"] - 1e-9

    fixed = best[5]["path"]
    r = runner.invoke(app, ["predict", "-m", str(run), "-i", str(phantoms / "imagesTr"), "-o", str(tmp_path / "fixed"), "--path", fixed])
    assert r.exit_code == 0, r.output
    assert "5/8" in r.output and len(list((tmp_path / "fixed").glob("*.nii.gz"))) == 6
    for bad in (["--path", "1011"], ["--path", fixed, "--policy", str(policy)]):
        r = runner.invoke(app, ["predict", "-m", str(run), "-i", str(phantoms / "imagesTr"), "-o", str(tmp_path / "bad"), *bad])
        assert r.exit_code == 2 and ("one 0 (drop) or 1 (keep)" in r.output or "not both" in r.output), r.output
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "pred"
    r = runner.invoke(app, ["predict", "-m", str(run), "-i", str(phantoms / "imagesTr"), "-o", str(out), "--policy", str(policy)])
    assert r.exit_code == 0, r.output
    assert "blocks used" in r.output and "/8" in r.output
    assert len(list(out.glob("*.nii.gz"))) == 6

    r = runner.invoke(
        app, ["predict", "-m", str(other), "-i", str(phantoms / "imagesTr"), "-o", str(tmp_path / "p2"), "--policy", str(policy)]
    )
    assert r.exit_code == 2 and "trained for another segmentation model" in r.output
    assert not (tmp_path / "p2").exists()


def test_predictor_reports_the_blocks_each_image_used(phantoms: Path, tiny_cfg, tmp_path: Path) -> None:
    from leanseg.checkpoint import load_run_model
    from leanseg.config import InferenceConfig
    from leanseg.data.io import read_image
    from leanseg.inference import Predictor
    from leanseg.training import train

    cfg = tiny_cfg.with_overrides({"model.name": "deeplab3d_r18", "model.deep_supervision": False, "train.iterations": 2})
    train(phantoms, tmp_path / "run", cfg, show_progress=False)
    model, plan, _ = load_run_model(tmp_path / "run")
    pol = PolicyNet(1, 8, size=(8, 8, 8), features=(4,))
    torch.nn.init.constant_(pol.head.bias, 0.0)
    pol.head.bias.data[:3] = 5.0  # drop the first three blocks of every image
    vol = read_image(sorted((phantoms / "imagesTr").glob("*.nii.gz"))[0])
    label, t = Predictor(model, plan, InferenceConfig(), policy=pol.eval()).predict_volume(vol)
    assert t["blocks_used"] == 5 and t["policy"] > 0 and label.shape == vol.shape
    full, _ = Predictor(model, plan, InferenceConfig()).predict_volume(vol)
    with torch.no_grad():
        pre = Predictor(model, plan, InferenceConfig())
        x = pre.preprocessor(vol)["image"].as_tensor()
        by_mask = pre.predict_preprocessed(x, drop_first(8, 3)).argmax(0)
        by_policy = Predictor(model, plan, InferenceConfig(), policy=pol).predict_preprocessed(x, drop_first(8, 3)).argmax(0)
    assert torch.equal(by_mask, by_policy)
    with pytest.raises(LeansegError, match="ONNX"):
        Predictor(model, plan, InferenceConfig(backend="onnx"), policy=pol)


def test_restarts_keep_the_policy_with_the_best_training_reward() -> None:
    """Each restart trains from its own seed; the kept policy is the one whose greedy paths earn most on the training cases."""
    from leanseg.config import AutoPathConfig
    from leanseg.dynamic.reinforce import greedy_reward

    model = tiny()
    gen = torch.Generator().manual_seed(0)
    cases = [(f"c{i}", torch.randn(1, 16, 16, 16, generator=gen), torch.randint(0, 3, (16, 16, 16), generator=gen)) for i in range(3)]
    cfg = AutoPathConfig(
        tau=0.1, policy_size=(8, 8, 8), policy_features=(4,), steps=16, stage_steps=2, images_per_step=2, samples_per_image=3,
        restarts=3, lr=0.1, num_threads=1,
    )  # fmt: skip
    res = train_policy(model, cases, cfg)
    assert [r["restart"] for r in res.history] == [0] * 16 + [1] * 16 + [2] * 16
    assert len(res.restart_rewards) == 3 and len(set(res.restart_rewards)) > 1  # the seeds led to different policies
    assert res.chosen_restart == int(np.argmax(res.restart_rewards)) != 0  # here a later seed does better
    assert greedy_reward(model, res.policy, cases, cfg, False) == pytest.approx(max(res.restart_rewards))
    one = train_policy(model, cases, AutoPathConfig(**{**cfg.__dict__, "restarts": 1}))
    assert one.restart_rewards == res.restart_rewards[:1]  # restart 0 is the single run: same seed, same result
