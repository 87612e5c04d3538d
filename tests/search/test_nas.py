"""Resource-optimised NAS: the macro search space as data and the weight-sharing supernet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanseg.bench import saved_for_backward
from leanseg.config import ExperimentConfig
from leanseg.models.nas_space import ArchitectureSpace, architecture_space
from leanseg.models.nas_unet import SuperNet, estimate_activation_bytes
from leanseg.search.nas import read_search_state

# odd median shapes: isotropic, and thick slices (two axis groups)
SPACES = [((35, 51, 37), (1.0, 1.0, 1.0)), ((61, 77, 19), (0.8, 0.8, 3.0))]


def test_patch_choices_follow_the_median_shape_per_axis_group() -> None:
    iso = architecture_space(*SPACES[0], in_channels=1, num_classes=3)
    assert iso.axis_groups == ((0, 1, 2),)
    patches = iso.decisions[0].choices
    assert patches[0] == (40, 56, 40)  # the median rounded up to a multiple of 8 (3 poolings)
    assert all(p[i] % 8 == 0 for p in patches for i in range(3)) and len(patches) == 5
    thick = architecture_space(*SPACES[1], in_channels=1, num_classes=3)
    assert thick.axis_groups == ((0, 1), (2,))
    assert thick.patch_size(thick.largest()) == (64, 80, 24)


@pytest.mark.parametrize("shape,spacing", SPACES)
def test_every_choice_of_every_decision_builds_a_working_network(shape, spacing) -> None:
    torch.manual_seed(0)
    space = architecture_space(shape, spacing, in_channels=2, num_classes=3)
    net = SuperNet(space)
    base = space.values([0.0] * space.dim)
    base.update({d.name: min(d.choices) for d in space.decisions if d.name.startswith("patch_")})  # small, fast
    for d in space.decisions:
        for choice in d.choices:
            arch = {**base, d.name: choice}
            if d.name.startswith("patch_"):
                arch = {**arch, **{k: v for k, v in base.items() if k.startswith("patch_") and k != d.name}}
            x = torch.randn(1, 2, *space.patch_size(arch))
            with torch.no_grad():
                y = net(x, arch)
            assert y.shape == (1, 3, *x.shape[2:]) and torch.isfinite(y).all(), (d.name, choice)
    # strides: the first two poolings always halve, and no axis pools below 4 voxels
    for arch in (space.largest(), base):
        size = np.asarray(space.patch_size(arch))
        for i, st in enumerate(space.strides(arch)):
            assert i >= 2 or all(s == 2 or size[a] < 8 for a, s in enumerate(st))
            size = size // np.asarray(st)
            assert (size >= 4).all() or (np.asarray(st) == 1).all()


def test_the_unit_cube_maps_to_choices_and_back() -> None:
    space = architecture_space(*SPACES[1], in_channels=1, num_classes=2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.values(rng.random(space.dim))
        assert space.values(space.unit(arch)) == arch
        assert space.from_indices(space.indices(arch)) == arch
    assert space.values([0.999999] * space.dim) == space.from_indices([len(d.choices) - 1 for d in space.decisions])


def test_children_share_the_supernets_weights() -> None:
    torch.manual_seed(1)
    space = architecture_space(*SPACES[0], in_channels=1, num_classes=2)
    net = SuperNet(space)
    small = {d.name: min(d.choices) for d in space.decisions if d.name.startswith("patch_")}
    a = {**space.values([0.0] * space.dim), **small}
    b = {**a, "activation_1": "elu", "conv2_dec_1": "zero", "dilation_2_1": 2}  # another child, same stage-1 convs
    other = {**a, "dilation_2_1": 3}  # this child uses dilation 3 at stage 2
    x = torch.randn(2, 1, *space.patch_size(a))
    before_b = net(x, b).detach()
    before_other_op = net.enc1[1].ops["3"][0].weight.clone()
    before_shortcut = net.shortcut[1][0].weight.clone()  # child a's stages are plain: no shortcut
    residual = {**a, "residual_2": "on"}
    assert not torch.allclose(net(x, residual), net(x, a))  # a residual stage adds its shortcut
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x, a).square().mean().backward()  # one step of training child a
    opt.step()
    assert not torch.allclose(net(x, b).detach(), before_b)  # child b sees the change
    assert torch.equal(net.enc1[1].ops["3"][0].weight, before_other_op)  # an op child a did not use is untouched
    assert torch.equal(net.shortcut[1][0].weight, before_shortcut)
    assert net.child_parameters(b) < sum(p.numel() for p in net.parameters())
    assert net.child_parameters(other) == net.child_parameters(a)


def test_long_skips_cross_resolutions_in_the_papers_space_and_keep_their_own_level_otherwise() -> None:
    from leanseg.models.nas_space import long_skip_source

    torch.manual_seed(4)
    space = architecture_space(*SPACES[0], in_channels=1, num_classes=2)  # 4 stages, decoder levels 1-3
    assert dict(zip(space.keys, (d.choices for d in space.decisions)))["long_skip_2"] == ("off", "enc_1", "enc_2", "enc_3", "enc_4")
    assert space.largest()["long_skip_2"] == "enc_2" and long_skip_source({"long_skip_2": "on"}, 2) == 2
    net = SuperNet(space)
    assert len(net.cross) == 3 * 3  # each decoder level from each other stage
    small = {d.name: min(d.choices) for d in space.decisions if d.name.startswith("patch_")}
    base = {**space.values([0.0] * space.dim), **small}
    x = torch.randn(1, 1, *space.patch_size(base))
    for source, key in (("enc_1", "1_2"), ("enc_4", "4_2")):  # finer (pooled), coarser (upsampled) than level 2
        child = {**base, "long_skip_2": source}
        assert not torch.allclose(net(x, child), net(x, base))
        net.zero_grad()
        net(x, child).square().mean().backward()
        assert net.cross[key].weight.grad.abs().sum() > 0
        assert all(c.weight.grad is None for k, c in net.cross.items() if k != key)
        assert net.long[1].weight.grad is None  # the same-level skip's weight is another
    same = architecture_space(*SPACES[0], in_channels=1, num_classes=2, cross_skips=False)
    assert same.largest()["long_skip_1"] == "on" and len(SuperNet(same).cross) == 0  # searches before the change load


@pytest.mark.parametrize("source", ["enc_1", "enc_4"])  # finer than decoder level 2 (pooled), coarser (upsampled)
def test_a_child_with_a_cross_resolution_skip_runs_the_same_on_onnx_runtime(source, tmp_path) -> None:
    from leanseg.export import export_part
    from leanseg.inference import onnx_session
    from leanseg.models.nas_unet import ChildNet

    torch.manual_seed(5)
    space = architecture_space(*SPACES[0], in_channels=1, num_classes=2)
    small = {d.name: min(d.choices) for d in space.decisions if d.name.startswith("patch_")}
    child = ChildNet(space, {**space.values([0.0] * space.dim), **small, "long_skip_2": source}).eval()
    patch = space.patch_size(child.arch)
    export_part(child.onnx_parts(torch.zeros(2, 1, *patch))["model"], tmp_path / "model.onnx")
    x = torch.randn(1, 1, *(2 * p for p in patch))  # not the traced size: the spatial axes are dynamic
    with torch.no_grad():
        assert torch.allclose(onnx_session(tmp_path / "model.onnx", 1)(x)[0], child(x), atol=1e-4)


def test_an_unknown_long_skip_space_is_refused_before_the_search(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.errors import LeansegError
    from leanseg.search.nas import search_architecture

    with pytest.raises(LeansegError, match="cross or same_level"):
        search_architecture(phantoms, tmp_path / "s", tiny_cfg, "random", episodes=1, children=1, skips="diagonal")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("shape,spacing", SPACES)
def test_memory_estimate_against_the_measured_activations(shape, spacing) -> None:
    torch.manual_seed(2)
    space = architecture_space(shape, spacing, in_channels=1, num_classes=3)
    net = SuperNet(space)
    rng = np.random.default_rng(3)
    for i in range(5):
        arch = space.largest() if i == 0 else space.values(rng.random(space.dim))
        x = torch.randn(2, 1, *space.patch_size(arch))
        measured, _ = saved_for_backward(lambda x=x, arch=arch: net(x, arch), parameters=False)
        est = estimate_activation_bytes(space, arch, batch=2)
        assert 0.8 < est / measured < 1.2, (arch, est, measured)


def _enas(space, **kw):
    from leanseg.search.controllers import EnasController

    ctrl = EnasController(space, seed=0, **kw)
    for p in ctrl.net.parameters():
        torch.nn.init.zeros_(p)
    return ctrl


def test_controller_log_probability_and_entropy_worked_by_hand() -> None:
    import math

    space = architecture_space(*SPACES[0], in_channels=1, num_classes=2)
    sizes = [len(d.choices) for d in space.decisions]
    ctrl = _enas(space)
    choices = [n - 1 for n in sizes]
    logp, ent = ctrl.net.log_prob_and_entropy(choices)
    # all weights zero: every decision uniform over its choices
    assert logp.item() == pytest.approx(-sum(math.log(n) for n in sizes), rel=1e-6)
    assert ent.item() == pytest.approx(sum(math.log(n) for n in sizes), rel=1e-6)
    # the pool type head (2 choices) biased to probabilities 1/4, 3/4; with zero weights its input does not matter
    i = space.keys.index("pool_type_1")
    with torch.no_grad():
        ctrl.net.heads[i].bias.copy_(torch.log(torch.tensor([1.0, 3.0])))
    logp2, ent2 = ctrl.net.log_prob_and_entropy(choices)
    assert logp2.item() - logp.item() == pytest.approx(math.log(0.75) - math.log(0.5), abs=1e-5)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert ent2.item() - ent.item() == pytest.approx(h - math.log(2), abs=1e-5)


def test_reinforce_makes_a_rewarded_architecture_more_likely_and_the_entropy_bonus_spreads() -> None:
    space = architecture_space(*SPACES[1], in_channels=1, num_classes=2)
    ctrl = _enas(space, lr=0.05, entropy_weight=0.0)
    arch = space.largest()
    choices = space.indices(arch)
    before, _ = ctrl.net.log_prob_and_entropy(choices)
    for _ in range(30):
        ctrl.update(choices, advantage=1.0)
    after, ent = ctrl.net.log_prob_and_entropy(choices)
    assert after.item() > before.item() + 5.0
    # through the ask/tell contract its proposals now agree with that architecture on most decisions
    asked = [space.values(ctrl.ask().unit) for _ in range(10)]
    agree = np.mean([[a[k] == arch[k] for k in space.keys] for a in asked])
    uniform = np.mean([1 / len(d.choices) for d in space.decisions])
    assert agree > 0.8 > uniform + 0.3
    # an entropy-only update (advantage 0) raises the entropy again
    spread = _enas(space, lr=0.05, entropy_weight=1.0)
    spread.net.load_state_dict(ctrl.net.state_dict())
    spread.update(choices, advantage=0.0)
    assert spread.net.log_prob_and_entropy(choices)[1].item() > ent.item()


def test_start_prob_centres_the_initial_policy_on_the_first_child() -> None:
    import math

    from leanseg.search.controllers import EnasController

    space = architecture_space(*SPACES[1], in_channels=1, num_classes=2)
    start = space.largest()
    ctrl = EnasController(space, seed=0, start=space.unit(start), start_prob=0.7)
    idx = space.indices(start)
    # whatever the LSTM's random weights, each step gives the start's choice 0.7 and the others equal shares
    logp, ent = ctrl.net.log_prob_and_entropy(idx)
    assert logp.item() == pytest.approx(space.dim * math.log(0.7), rel=1e-5)
    by_hand = sum(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3 / (len(d.choices) - 1))) for d in space.decisions)
    assert ent.item() == pytest.approx(by_hand, rel=1e-5)
    assert ctrl.greedy() == idx
    # the first ask is the start itself; later draws keep each decision's start choice about 70% of the time
    assert space.normalise(ctrl.ask().values) == start
    agree = np.mean([[a == b for a, b in zip(s, idx)] for s in ctrl.sample(200, seed=1)])
    assert 0.65 < agree < 0.75
    # it is a prior, not a constraint: rewarding another architecture moves the policy off the start
    other = [(k + 1) % len(d.choices) for k, d in zip(idx, space.decisions)]
    ctrl.opt = torch.optim.Adam(ctrl.net.parameters(), lr=0.05)
    before = ctrl.net.log_prob_and_entropy(other)[0].item()
    for _ in range(20):
        ctrl.update(other, advantage=1.0)
    assert ctrl.net.log_prob_and_entropy(other)[0].item() > before + 5.0
    with pytest.raises(ValueError, match="start_prob"):
        EnasController(space, seed=0, start=space.unit(start), start_prob=0.3)  # not above 1/3 for the dilations


def test_controller_lr_reaches_the_controller_and_belongs_to_the_search(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.errors import LeansegError
    from leanseg.search.controllers.base import tensors_from_b64 as _from_b64
    from leanseg.search.nas import search_architecture

    kw = dict(base=tiny_cfg, episodes=1, children=1, scored_children=1, child_iterations=1, val_cases=1, num_stages=3, seed=0)
    search_architecture(phantoms, tmp_path / "s", controller_lr=0.05, **kw)
    st = read_search_state(tmp_path / "s")
    assert _from_b64(st["controller"]["opt"])["param_groups"][0]["lr"] == 0.05
    # resuming with another rate would mix two searches in one file: refused, naming the file
    with pytest.raises(LeansegError, match="search.pt belongs to another search"):
        search_architecture(phantoms, tmp_path / "s", controller_lr=0.001, **kw)


def test_search_respects_the_memory_limit_resumes_after_a_kill_and_leaves_a_predictable_child(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.data.prepare import prepare_data
    from leanseg.inference import Predictor
    from leanseg.models.nas_unet import SuperNet
    from leanseg.search.nas import memory_needed, search_architecture

    plan = prepare_data(phantoms, tiny_cfg).plan
    space = architecture_space(plan.median_shape, plan.target_spacing, plan.num_channels, plan.num_classes, 3, tiny_cfg.model.base_features)
    n = sum(p.numel() for p in SuperNet(space).parameters())
    sizes = sorted({memory_needed(space, {**space.largest(), "patch_0": c}, n, 2) for c in space.decisions[0].choices})
    limit_gb = (sizes[-1] + sizes[-2]) / 2 / 2**30  # the largest patch does not fit, the next one does
    kw = dict(base=tiny_cfg, episodes=2, children=2, scored_children=1, child_iterations=2, val_cases=1, memory_limit_gb=limit_gb)
    kw.update(num_stages=3, seed=0)

    class Kill(Exception):
        pass

    def kill_after_3(row, done, total):
        if done == 3:
            raise Kill

    with pytest.raises(Kill):
        search_architecture(phantoms, tmp_path / "nas", progress=kill_after_3, **kw)
    seen = []
    res = search_architecture(phantoms, tmp_path / "nas", progress=lambda row, done, total: seen.append(done), **kw)
    assert seen == [4, 5, 6]  # only the second episode ran after the restart
    assert [(r["episode"], r["phase"]) for r in res.history] == [(e, p) for e in (0, 1) for p in ("train", "train", "score")]
    first = space.normalise(res.history[0]["arch"])
    assert first == {**space.largest(), "patch_0": first["patch_0"]} and first["patch_0"] != max(space.decisions[0].choices)
    assert all(r["memory_estimate_mib"] * 2**20 <= limit_gb * 2**30 for r in res.history)
    assert all(np.isfinite(r["entropy"]) for r in res.history)
    assert all((r["reward"] is None) == (r["phase"] == "train") for r in res.history)
    assert all(0 <= r["reward"] <= 1 for r in res.history if r["phase"] == "score")
    assert (tmp_path / "nas" / "search.png").is_file() and (tmp_path / "nas" / "history.csv").is_file()

    # the chosen child predicts as a run folder, with the shared weights (no retraining)
    p = Predictor.from_run(res.run_dir)
    assert p.model.arch == res.arch
    from leanseg.data.io import read_image

    vol = read_image(sorted((phantoms / "imagesTr").iterdir())[:1])
    label, _ = p.predict_volume(vol)
    assert label.shape == vol.shape


def test_child_role_numbers_the_phases_of_both_loops() -> None:
    from leanseg.search.nas import child_role

    two_phase = [child_role(i, 1, 2, 3) for i in range(7)]  # one warm-up child, then 2 training and 3 scored per episode
    assert two_phase == [
        (-1, 0, "train"),
        (0, 0, "train"),
        (0, 1, "train"),
        (0, 0, "score"),
        (0, 1, "score"),
        (0, 2, "score"),
        (1, 0, "train"),
    ]
    assert [child_role(i, 1, 2, 0) for i in range(4)] == [(-1, 0, "both"), (0, 0, "both"), (0, 1, "both"), (1, 0, "both")]


def test_the_two_phase_loop_tells_the_controller_only_children_scored_with_the_weights_fixed(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.errors import LeansegError
    from leanseg.search.nas import search_architecture

    class Kill(Exception):
        pass

    def kill_after_training(row, done, total):
        if done == 2:
            raise Kill

    kw = dict(base=tiny_cfg, episodes=1, children=2, scored_children=3, child_iterations=2, val_cases=1, num_stages=3, seed=0)
    with pytest.raises(Kill):
        search_architecture(phantoms, tmp_path / "s", progress=kill_after_training, **kw)
    trained = read_search_state(tmp_path / "s")
    assert trained["controller"]["history"] == [] and trained["controller"]["baseline"] is None  # training children: not told
    res = search_architecture(phantoms, tmp_path / "s", **kw)
    st = read_search_state(tmp_path / "s")
    # the scored children did not train the shared weights: they are as the training phase left them
    assert all(torch.equal(v, st["supernet"][k]) for k, v in trained["supernet"].items())
    told = st["controller"]["history"]
    assert [h["id"] for h in told] == [2, 3, 4] and st["meta"]["loop"] == "two_phase"
    assert [h["reward"] for h in told] == pytest.approx([r["reward"] for r in res.history if r["phase"] == "score"])
    assert st["controller"]["baseline"] is not None
    assert (tmp_path / "s" / "search.png").is_file() and "phase" in (tmp_path / "s" / "history.csv").read_text().splitlines()[0]
    # the interleaved loop scores every child right after its own update and tells each of them
    old = search_architecture(phantoms, tmp_path / "i", **{**kw, "loop": "interleaved"})
    assert len(old.history) == 2 and all(r["phase"] == "both" and r["reward"] is not None for r in old.history)
    assert [h["id"] for h in read_search_state(tmp_path / "i")["controller"]["history"]] == [0, 1]
    with pytest.raises(LeansegError, match="Unknown search loop 'alternate'; use two_phase or interleaved"):
        search_architecture(phantoms, tmp_path / "x", **{**kw, "loop": "alternate"})
    with pytest.raises(LeansegError, match="--scored-children must be 1 or more"):
        search_architecture(phantoms, tmp_path / "x", **{**kw, "scored_children": 0})


def test_search_architecture_command(phantoms, tiny_cfg, tmp_path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    tiny_cfg.save(tmp_path / "tiny.yaml")
    args = ["search", "architecture", "-d", str(phantoms), "-o", str(tmp_path / "s"), "--episodes", "1", "--children", "2"]
    args += ["--child-iterations", "1", "--val-cases", "1", "--config", str(tmp_path / "tiny.yaml"), "--controller", "random"]
    args += ["--final-iterations", "2", "--scored-children", "1"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "episode 0 train child 1: trained the shared weights" in res.output and "episode 0 score child 0: Dice" in res.output
    assert "after 2 iterations of its own" in res.output
    assert "chosen child" in res.output and (tmp_path / "s" / "final" / "checkpoint_final.pt").is_file()


def test_final_iterations_train_only_the_chosen_child_and_leave_the_search_state_alone(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.inference import Predictor
    from leanseg.search.nas import search_architecture

    kw = dict(base=tiny_cfg, controller="random", episodes=1, children=2, scored_children=1, child_iterations=1, val_cases=1)
    kw.update(num_stages=3, seed=0)
    plain = search_architecture(phantoms, tmp_path / "a", **kw)
    saved = read_search_state(tmp_path / "a")["supernet"]
    steps: list[tuple[int, int]] = []
    tuned = search_architecture(phantoms, tmp_path / "a", final_iterations=3, final_progress=lambda *a: steps.append(a), **kw)
    assert steps == [(3, 3)]  # resumed: only the final phase ran, and it said so
    assert tuned.arch == plain.arch and tuned.val_dice_shared_weights == pytest.approx(plain.val_dice)
    assert tuned.final_seconds > 0 and plain.final_seconds == 0
    # the run folder says how its weights were last trained: the config's momentum, not the search's 0.9
    assert tiny_cfg.train.momentum != 0.9
    assert ExperimentConfig.load(tuned.run_dir / "config.yaml").train.momentum == tiny_cfg.train.momentum
    after = read_search_state(tmp_path / "a")["supernet"]
    assert all(torch.equal(saved[k], after[k]) for k in saved)  # the search state is not touched
    final = Predictor.from_run(tuned.run_dir).model.state_dict()
    changed = {k for k in saved if not torch.equal(saved[k], final[k])}
    # only the chosen child's weights moved: the encoder convolutions of the dilations it did not pick did not
    picked = {f"enc1.{s}.ops.{tuned.arch.get(f'dilation_{s + 1}_1', 1)}." for s in range(3)}
    unpicked = {k for k in saved if k.startswith("enc1.") and not any(k.startswith(p) for p in picked)}
    assert unpicked and changed and not (changed & unpicked)
    assert any(k.startswith(tuple(picked)) for k in changed)
    # --final-momentum replaces the config's momentum in the final phase only, and the run folder says so
    other = search_architecture(phantoms, tmp_path / "a", final_iterations=1, final_momentum=0.5, **kw)
    assert ExperimentConfig.load(other.run_dir / "config.yaml").train.momentum == 0.5
    assert read_search_state(tmp_path / "a")["meta"]["momentum"] == 0.9
    # --final-schedule continue: the same start and batches at a lower learning rate end elsewhere
    cont = search_architecture(phantoms, tmp_path / "a", final_iterations=3, final_schedule="continue", **kw)
    cont_weights = Predictor.from_run(cont.run_dir).model.state_dict()
    assert cont.arch == tuned.arch and any(not torch.equal(final[k], cont_weights[k]) for k in changed)


def test_the_final_schedule_restarts_or_continues_the_decay_and_an_unknown_one_is_refused_before_the_search(
    phantoms, tiny_cfg, tmp_path
) -> None:
    from leanseg.errors import LeansegError
    from leanseg.search.nas import final_lr, search_architecture
    from leanseg.training.schedule import lr_at

    restart, cont = final_lr(0.01, "poly", "restart", 8000, 3000), final_lr(0.01, "poly", "continue", 8000, 3000)
    assert restart(0) == pytest.approx(0.01) and cont(0) == pytest.approx(0.01 * (3000 / 11000) ** 0.9)
    # continuing is the one poly decay over 11000 iterations, read from step 8000 on
    assert all(cont(i) == pytest.approx(lr_at(0.01, "poly", (8000 + i) / 11000)) for i in (0, 1000, 2999))
    assert restart(2999) < 1e-4 and cont(2999) < restart(2999)
    with pytest.raises(LeansegError, match="restart or continue"):
        search_architecture(phantoms, tmp_path / "s", tiny_cfg, "random", episodes=1, children=1, final_schedule="warm")
    assert not (tmp_path / "s" / "search.pt").exists()


def test_warmup_children_train_the_shared_weights_without_teaching_the_controller(phantoms, tiny_cfg, tmp_path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app
    from leanseg.errors import LeansegError
    from leanseg.search.controllers import make_controller
    from leanseg.search.controllers.base import tensors_from_b64 as _from_b64
    from leanseg.search.nas import search_architecture

    class Kill(Exception):
        pass

    def kill_after_warmup(row, done, total):
        if done == 3:
            raise Kill

    kw = dict(base=tiny_cfg, loop="interleaved", episodes=1, children=2, child_iterations=1, val_cases=1, seed=0, warmup_children=3)
    with pytest.raises(Kill):
        search_architecture(phantoms, tmp_path / "s", progress=kill_after_warmup, **kw)
    st = read_search_state(tmp_path / "s")
    assert [r["episode"] for r in st["history"]] == [-1, -1, -1] and st["meta"]["warmup_children"] == 3
    space = ArchitectureSpace.from_dict(st["meta"]["space"])
    first = space.normalise(st["history"][0]["arch"])
    assert first == space.largest()  # the warm-up starts from the paper's first child, then draws uniformly
    assert any(space.normalise(r["arch"]) != first for r in st["history"][1:])
    # three children trained the shared weights, and the controller is as it was built: no update, no history
    fresh = make_controller("enas", space, seed=0, start=space.unit(first))
    ctrl = st["controller"]["inner"]  # the warm-up controller holds the ENAS controller and the uniform one
    assert ctrl["next_id"] == 0 and ctrl["history"] == [] and ctrl["baseline"] is None
    assert all(torch.equal(v, fresh.net.state_dict()[k]) for k, v in _from_b64(ctrl["net"]).items())

    # the command resumes it with the same settings: only the controller's two children run, as episode 0
    tiny_cfg.save(tmp_path / "tiny.yaml")
    args = ["search", "architecture", "-d", str(phantoms), "-o", str(tmp_path / "s"), "--episodes", "1", "--children", "2"]
    args += ["--child-iterations", "1", "--val-cases", "1", "--config", str(tmp_path / "tiny.yaml"), "--warmup-children", "3"]
    args += ["--loop", "interleaved"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "warm-up" in res.output and res.output.count("episode 0 child") == 2 and "episode -1 child" not in res.output
    st = read_search_state(tmp_path / "s")
    assert [r["episode"] for r in st["history"]] == [-1, -1, -1, 0, 0]
    assert st["controller"]["inner"]["next_id"] == 2 and st["controller"]["inner"]["baseline"] is not None
    assert space.normalise(st["history"][3]["arch"]) == first  # the controller's own first child is the start, as without warm-up
    # another warm-up length is another search
    with pytest.raises(LeansegError, match="belongs to another search"):
        search_architecture(phantoms, tmp_path / "s", **{**kw, "warmup_children": 2})


def test_score_children_scores_as_the_search_did_and_counts_its_samples(phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.search.nas import decisions_apart, score_children, search_architecture

    kw = dict(base=tiny_cfg, controller="random", episodes=1, children=2, scored_children=2, child_iterations=1, val_cases=1)
    search_architecture(phantoms, tmp_path / "s", num_stages=3, seed=0, **kw)
    st = read_search_state(tmp_path / "s")
    space = ArchitectureSpace.from_dict(st["meta"]["space"])
    last = st["history"][-1]
    resunet = space.residual_unet()
    rows = score_children(tmp_path / "s", {"last": last["arch"], "resunet": resunet}, phantoms, tiny_cfg, 1)
    # the saved weights are those the last (scored) child was rewarded with: its reward comes back
    assert rows[0]["reward_dice"] == pytest.approx(last["reward"], abs=1e-6)
    assert rows[0]["sampled"] >= 1 and rows[0]["nearest_sampled"] == 0
    sampled = [space.normalise(h["arch"]) for h in st["history"]]
    assert rows[1]["nearest_sampled"] == min(decisions_apart(a, space.normalise(resunet)) for a in sampled)
    assert all(resunet[k] == 1 for k in resunet if k.startswith("dilation_"))
    assert all(resunet[k] == "off" for k in resunet if k.startswith("long_skip_"))


def test_a_search_on_a_partly_annotated_dataset_leaves_the_ignore_label_out(partial_phantoms, tiny_cfg, tmp_path) -> None:
    from leanseg.search.nas import search_architecture

    kw = dict(base=tiny_cfg, controller="random", episodes=1, children=2, scored_children=1, child_iterations=2, val_cases=1)
    res = search_architecture(partial_phantoms, tmp_path / "s", final_iterations=2, num_stages=3, seed=0, **kw)
    assert np.isfinite(res.val_dice) and all(np.isfinite(h["reward"]) for h in res.history if h["phase"] == "score")


def test_the_search_takes_a_device_and_refuses_one_torch_cannot_see(phantoms, tiny_cfg, tmp_path) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    tiny_cfg.save(tmp_path / "tiny.yaml")
    args = ["search", "architecture", "-d", str(phantoms), "-o", str(tmp_path / "s"), "--episodes", "1", "--children", "1"]
    args += ["--child-iterations", "1", "--val-cases", "1", "--config", str(tmp_path / "tiny.yaml"), "--controller", "random"]
    args += ["--scored-children", "1"]
    res = CliRunner().invoke(app, [*args, "--device", "cpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(app, [*args[:5], str(tmp_path / "t"), *args[6:], "--device", "cuda"])
        assert res.exit_code == 2 and "sees 0 CUDA device" in res.output
