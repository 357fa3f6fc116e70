"""model_hinge/search.py: penalty, annealing, lr adjustment, proximal step, threshold search, legacy freezing."""

import pytest
import torch

from conftest import make_args
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.search import SearchController, compression_report, initial_layer_weights, search_param_groups
from utils.io import load_torch, save_torch
from utils.rundir import ConsoleLog

RESNET8 = '--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A'


def _hinge(argv: str, **flags):
    args = make_args(argv, **flags)
    adapter = adapter_for(args.model)
    torch.manual_seed(0)
    return HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 32, 32), init=True), args


def _set_matrices(hm: HingeModel, first: float, second: float) -> None:
    """A1 = first * I and A2 = second * I in every block (square matrices of 16, 32, 64 channels)."""
    with torch.no_grad():
        for fam in hm.families:
            a = fam.members[0].param
            a.copy_(torch.eye(a.shape[0]).view_as(a) * (first if fam.role == 0 else second))


def test_penalty_is_the_mean_group_norm_sum_per_matrix_role():
    hm, args = _hinge(RESNET8)
    _set_matrices(hm, 2.0, 0.5)
    controller = SearchController(hm, args, None)
    assert torch.allclose(controller.penalties(), torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]))
    args.q = 2.0
    root = (16 ** 0.5 + 32 ** 0.5 + 64 ** 0.5) / 3
    assert torch.allclose(controller.penalties(), torch.tensor([2.0 * root, 0.5 * root]))


def test_vgg_penalty_sums_columns_and_rows_of_the_same_matrix():
    hm, args = _hinge('--template CIFAR10 --model Hinge_VGG --vgg_type A')
    with torch.no_grad():
        for fam in hm.families:
            fam.members[0].param.fill_(1.0)
    sizes = [(f.members[0].param.shape[0], f.members[0].param.shape[1]) for f in hm.families[0::2]]
    columns = sum(m * out ** 0.5 for out, m in sizes)
    rows = sum(out * m ** 0.5 for out, m in sizes)
    assert torch.allclose(SearchController(hm, args, None).penalties(), torch.tensor([columns, rows]))


def test_annealing_steps_down_at_the_two_levels():
    hm, args = _hinge(RESNET8, regularization_factor=4e-4, annealing_factor=2.0, annealing_t1=20.0,
                      annealing_t2=15.0)
    c = SearchController(hm, args, None)
    values = [float(c.regularization(torch.tensor(p))) for p in (25.0, 20.0, 16.0, 15.0, 3.0)]
    assert values == pytest.approx([4e-4, 2e-4, 2e-4, 1e-4, 1e-4])
    args.annealing_factor = 0
    assert float(c.regularization(torch.tensor(3.0))) == pytest.approx(4e-4)


def test_gradient_ratio_running_average_and_lr_multipliers():
    hm, args = _hinge(RESNET8)
    c = SearchController(hm, args, None)
    first = [f.members[0].param for f in hm.families if f.role == 0]
    second = [f.members[0].param for f in hm.families if f.role == 1]

    def set_grads(g1, g2):
        for p in first:
            p.grad = torch.full_like(p, g1)
        for p in second:
            p.grad = torch.full_like(p, g2)

    column_norm_sum = sum(p.shape[1] * p.shape[0] ** 0.5 for p in first)
    set_grads(3.0, 2.0)
    assert c.update_grad_ratio() == pytest.approx(1.5)                       # first value taken as is
    set_grads(1.0, 1.0)
    assert c.update_grad_ratio() == pytest.approx(0.1 * 1.5 + 0.9 * 1.0)     # weight 0.9 on the new ratio
    set_grads(10.0, 1.0)
    assert c.update_grad_ratio() == pytest.approx(9 / 5)                     # clipped to [5/9, 9/5]
    assert column_norm_sum > 0
    assert c.lr_multipliers(3, 1.8) == pytest.approx([1.8 ** -1.35, 1.8 ** -1.35, 1.0])
    args.lr_adjust_method = 'p2'
    assert c.lr_multipliers(3, 1.8) == pytest.approx([1.0, 1.0, 1.8 ** 1.35])


def test_proximal_step_soft_thresholds_each_group_with_layer_weights():
    hm, args = _hinge(RESNET8, sparsity_regularizer='l1')
    _set_matrices(hm, 0.5, 2.0)
    weights = initial_layer_weights(hm.families)
    assert set(weights.values()) == {0.5, 2.0}
    c = SearchController(hm, args, weights)
    c.proximal_step(lr=0.1, regularization=torch.tensor(2.0))
    for fam in hm.families:
        start = 0.5 if fam.role == 0 else 2.0
        expected = max(0.0, start - 2.0 * 0.1 * start)                     # n - reg * lr * layer weight
        assert torch.allclose(fam.members[0].param.squeeze().norm(dim=0), torch.full((fam.size,), expected))
    assert not bool(c.bad)


def test_param_groups_put_a1_and_a2_apart_and_the_rest_at_the_lr_ratio():
    hm, args = _hinge(RESNET8)
    groups = search_param_groups(hm, 0.1, 0.01)
    assert [g['lr'] for g in groups] == pytest.approx([0.001, 0.1, 0.1])
    ids = [{id(p) for p in g['params']} for g in groups]
    assert ids[1] == {id(f.members[0].param) for f in hm.families if f.role == 0}
    assert ids[2] == {id(f.members[0].param) for f in hm.families if f.role == 1}
    assert sum(len(i) for i in ids) == len(list(hm.net.parameters()))
    vgg, _ = _hinge('--template CIFAR10 --model Hinge_VGG --vgg_type A')
    groups = search_param_groups(vgg, 0.1, 0.01)
    bias = vgg.net.features[2][0][1].bias
    assert len(groups) == 2 and any(p is bias for p in groups[0]['params'])


def test_legacy_freezing_stops_sgd_and_accumulates_gradients():
    hm, args = _hinge(RESNET8, legacy_search=True)
    c = SearchController(hm, args, None)
    optimizer = torch.optim.SGD(search_param_groups(hm, 0.1, 0.1), lr=0.1, momentum=0.9)
    c.freeze_compressible()
    a1 = hm.families[0].members[0].param
    conv1 = hm.net.features[1][0].body[0][0].weight
    bn = hm.net.features[1][0].body[1].weight
    assert any(p is a1 for p in c.frozen) and any(p is conv1 for p in c.frozen)
    before = {k: v.detach().clone() for k, v in (('a1', a1), ('conv1', conv1), ('bn', bn))}
    x = torch.randn(2, 3, 32, 32)
    grads = []
    c.start_epoch()
    for _ in range(2):
        c.zero_grad(optimizer)
        hm.net(x).sum().backward()
        grads.append(a1.grad.clone())
        c.optimizer_step(optimizer)
    assert torch.equal(a1, before['a1']) and torch.equal(conv1, before['conv1'])
    assert not torch.equal(bn, before['bn'])
    assert not torch.allclose(grads[1], grads[0]) and grads[1].abs().sum() > grads[0].abs().sum() * 0.5
    c.start_epoch()
    assert a1.grad is None


def _spread_vgg():
    """VGG-16 whose matrices are diagonal with norms spread evenly over (0, 1]."""
    hm, args = _hinge('--template CIFAR10 --model Hinge_VGG --vgg_type 16', remain_percentage=0.1)
    with torch.no_grad():
        for fam in hm.families[0::2]:
            a = fam.members[0].param
            m = a.shape[0]
            a.copy_(torch.diag(torch.linspace(1.0 / m, 1.0, m)).view_as(a))
    return hm, args


@pytest.mark.parametrize('legacy', [False, True])
def test_threshold_search_reaches_the_target_within_0_001(legacy):
    hm, args = _spread_vgg()
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    search = c.search_threshold_legacy if legacy else c.search_threshold
    found = c.ratio_at(norms, search(norms, 0.6, ConsoleLog()))
    assert abs(found - 0.6) <= 0.001
    if not legacy:
        # Every attainable compression keeps the groups with norm >= some group norm: the bisection finds
        # the closest of them all.
        candidates = [0.0] + torch.unique(torch.cat(list(norms.values()))).tolist()
        assert abs(found - 0.6) <= min(abs(c.ratio_at(norms, t) - 0.6) for t in candidates) + 1e-12


def test_threshold_search_is_exact_when_the_target_is_attainable():
    hm, args = _hinge(RESNET8)
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    target = c.ratio_at(norms, float(torch.cat(list(norms.values())).median()))
    threshold = c.search_threshold(norms, target, ConsoleLog())
    assert c.ratio_at(norms, threshold) == pytest.approx(target, abs=1e-12)


def test_compression_report_lines_and_weights_only_information(tmp_path):
    hm, args = _hinge(RESNET8, p1_p2_same_ratio=True)
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    flops, params, kept = c.cost(norms, 0.5)
    lines, info, per_layer = compression_report(hm, norms, kept, 0.5, 7, flops, params)
    assert lines[1].startswith('ResBlock0  Layer1: channels -> orginal=16, compress=')
    assert 'Hinge searching epochs: 7  \nFinal nullifying threshold 0.50000000' in lines[-1]
    assert info['epoch_continue'] == 7 and info['flops_ratio'] == pytest.approx(flops / hm.baseline_flops * 100)
    assert len(info['info_layer0']) == 2 and len(per_layer[0]) == len(per_layer[1]) == 3
    assert len(kept[hm.families[1]]) == len(kept[hm.families[0]])          # --p1_p2_same_ratio
    save_torch(info, tmp_path / 'compression_information.pt')
    loaded = load_torch(tmp_path / 'compression_information.pt', 'test')
    assert torch.equal(loaded['info_layer2'][1]['pindex'], kept[hm.families[5]])


def test_sgd_mode_adds_the_scaled_penalty_to_the_loss_and_pg_mode_does_not():
    from model_hinge.search import SearchHooks

    hm, args = _hinge(RESNET8, optimizer='SGD', regularization_factor=0.3)
    _set_matrices(hm, 2.0, 0.5)
    hooks = SearchHooks(SearchController(hm, args, None), args)
    hooks.extra_loss().backward()
    # d/dA of the column-norm sum of c*I is I; P1 and P2 average over the 3 blocks, times the factor.
    for fam in hm.families:
        a = fam.members[0].param
        assert torch.allclose(a.grad.squeeze(), torch.eye(a.shape[0]) * 0.3 / 3)
    assert torch.allclose(hooks.penalty, torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]) * 0.3)
    args.optimizer = 'PG'
    pg = SearchHooks(SearchController(hm, args, None), args)
    assert pg.extra_loss() is None and torch.allclose(pg.penalty, torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]))
