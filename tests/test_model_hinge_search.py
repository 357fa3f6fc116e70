"""model_hinge/search.py: penalty, annealing, lr adjustment, proximal step, threshold search, legacy quirks."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import model_hinge
from conftest import SMALL, hinge_model, reference_flops, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.search import (
    RANKINGS,
    SearchController,
    compression_report,
    initial_layer_weights,
    ranking_scores,
    search_param_groups,
    shared_family,
)
from model_hinge.surgery import compress
from utils.io import load_torch, save_torch
from utils.rundir import ConsoleLog
from utils.steps import SearchHooks

RESNET8 = '--model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A'


def _set_matrices(hm: HingeModel, first: float, second: float) -> None:
    """A1 = first * I and A2 = second * I in every block (square matrices of 16, 32, 64 channels)."""
    with torch.no_grad():
        for fam in hm.families:
            a = fam.members[0].param
            a.copy_(torch.eye(a.shape[0]).view_as(a) * (first if fam.role == 0 else second))


def test_penalty_is_the_mean_group_norm_sum_per_matrix_role():
    hm, args = hinge_model(RESNET8)
    _set_matrices(hm, 2.0, 0.5)
    controller = SearchController(hm, args, None)
    assert torch.allclose(controller.penalties(), torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]))
    args.q = 2.0
    root = (16 ** 0.5 + 32 ** 0.5 + 64 ** 0.5) / 3
    assert torch.allclose(SearchController(hm, args, None).penalties(), torch.tensor([2.0 * root, 0.5 * root]))


def test_vgg_penalty_sums_columns_and_rows_of_the_same_matrix():
    hm, args = hinge_model(SMALL['Hinge_VGG'], init='p-identity')       # the matrices are set below
    with torch.no_grad():
        for fam in hm.families:
            fam.members[0].param.fill_(1.0)
    sizes = [(f.members[0].param.shape[0], f.members[0].param.shape[1]) for f in hm.families[0::2]]
    columns = sum(m * out ** 0.5 for out, m in sizes)
    rows = sum(out * m ** 0.5 for out, m in sizes)
    assert torch.allclose(SearchController(hm, args, None).penalties(), torch.tensor([columns, rows]))


def test_one_role_models_have_a_single_penalty_term():
    hm, args = hinge_model(SMALL['Hinge_RESNEXT'])
    with torch.no_grad():
        for fam in hm.families:
            for m in fam.members:
                m.param.fill_(1.0)
    # a cardinality group of conv1 rows (chunk x 64 inputs) and conv3 columns (chunk x out): sqrt of both counts
    expected = 0.0
    for fam in hm.families:
        conv1, conv3 = (m.param for m in fam.members)
        per_group = (fam.chunk * conv1.shape[1] + fam.chunk * conv3.shape[0]) ** 0.5
        expected += fam.size * per_group
    penalty = SearchController(hm, args, None).penalties()
    assert penalty.shape == (1,) and torch.allclose(penalty, torch.tensor([expected]))


def test_annealing_steps_down_at_the_two_levels_unless_the_legacy_policy_ignores_it():
    hm, args = hinge_model(RESNET8, regularization_factor=4e-4, annealing_factor=2.0, annealing_t1=20.0,
                           annealing_t2=15.0)
    c = SearchController(hm, args, None)
    values = [float(c.regularization(torch.tensor(p))) for p in (25.0, 20.0, 16.0, 15.0, 3.0)]
    assert values == pytest.approx([4e-4, 2e-4, 2e-4, 1e-4, 1e-4])
    args.annealing_factor = 0
    assert float(SearchController(hm, args, None).regularization(torch.tensor(3.0))) == pytest.approx(4e-4)
    dense, dense_args = hinge_model(SMALL['Hinge_DENSENET_SVD'], regularization_factor=4e-4, annealing_factor=2.0,
                                    annealing_t1=20.0, annealing_t2=15.0)
    assert float(SearchController(dense, dense_args, None).regularization(torch.tensor(3.0))) == pytest.approx(1e-4)
    dense_args.legacy_search = True     # the original's DenseNet passes the factor as is
    assert float(SearchController(dense, dense_args, None).regularization(torch.tensor(3.0))) == pytest.approx(4e-4)


def test_gradient_ratio_uses_column_norms_running_average_and_lr_multipliers():
    hm, args = hinge_model(RESNET8)
    c = SearchController(hm, args, None)
    first = [f.members[0].param for f in hm.families if f.role == 0]
    second = [f.members[0].param for f in hm.families if f.role == 1]

    def set_grads(g1, g2, first_row_only=False):
        for p in first:
            p.grad = torch.full_like(p, g1)
        for p in second:
            p.grad = torch.zeros_like(p)
            if first_row_only:
                p.grad[0] = g2
            else:
                p.grad.fill_(g2)

    # Columns of ones (c x c): c columns of norm sqrt(c). A2 with only its first row set: c columns of norm 1.
    # Summed over the blocks (c = 16, 32, 64); row norms would give other numbers.
    set_grads(1.0, 1.0, first_row_only=True)
    expected = sum(c ** 1.5 for c in (16, 32, 64)) / sum((16, 32, 64))
    assert float(c.update_grad_ratio()) == pytest.approx(expected, rel=1e-6)
    hm.net.running_grad_ratio = torch.tensor(1.5)
    set_grads(1.0, 1.0)
    assert float(c.update_grad_ratio()) == pytest.approx(0.1 * 1.5 + 0.9 * 1.0)  # weight 0.9 on the new ratio
    set_grads(10.0, 1.0)
    assert float(c.update_grad_ratio()) == pytest.approx(9 / 5)                  # clipped to [5/9, 9/5]
    assert [float(m) for m in c.lr_multipliers(3, torch.tensor(1.8))] == pytest.approx([1.8 ** -1.35] * 2 + [1.0])
    assert [float(m) for m in c.lr_multipliers(3, torch.tensor(0.0))] == [1.0, 1.0, 1.0]
    args.lr_adjust_method = 'p2'
    p2 = SearchController(hm, args, None)
    assert [float(m) for m in p2.lr_multipliers(3, torch.tensor(1.8))] == pytest.approx([1.0, 1.0, 1.8 ** 1.35])


def test_proximal_step_soft_thresholds_each_group_with_layer_weights():
    hm, args = hinge_model(RESNET8, sparsity_regularizer='l1')
    _set_matrices(hm, 0.5, 2.0)
    weights = initial_layer_weights(hm.families)
    assert weights == pytest.approx([0.5, 2.0] * 3)
    c = SearchController(hm, args, weights)
    c.proximal_step([0.1, 0.1], regularization=torch.tensor(2.0))
    for fam in hm.families:
        start = 0.5 if fam.role == 0 else 2.0
        expected = max(0.0, start - 2.0 * 0.1 * start)                     # n - reg * lr * layer weight
        assert torch.allclose(fam.members[0].param.squeeze().norm(dim=0), torch.full((fam.size,), expected))
    assert not bool(c.bad)


def test_legacy_layer_weights_shift_by_one_family_where_the_original_did():
    hm, args = hinge_model(SMALL['Hinge_DENSENET_SVD'], sparsity_regularizer='l1', legacy_search=True)
    with torch.no_grad():
        for i, fam in enumerate(hm.families):
            a = fam.members[0].param
            a.copy_(torch.eye(a.shape[0]).view_as(a) * (i + 1))
    weights = initial_layer_weights(hm.families)
    assert weights == pytest.approx([i + 1.0 for i in range(len(hm.families))])
    SearchController(hm, args, weights).proximal_step([0.01], regularization=torch.tensor(1.0))
    n = len(hm.families)
    for i, fam in enumerate(hm.families):
        shifted = weights[(i - 1) % n]                                     # family i uses the weight of i - 1
        expected = (i + 1) - 0.01 * shifted
        assert torch.allclose(fam.members[0].param.squeeze().norm(dim=0), torch.full((fam.size,), expected))


def test_prox_lr_of_the_last_group_or_of_each_role():
    hm, args = hinge_model(RESNET8)
    c = SearchController(hm, args, None)
    optimizer = torch.optim.SGD(search_param_groups(hm, 0.1, 0.01, False), lr=0.1)
    for group, lr in zip(optimizer.param_groups, (0.001, 0.2, 0.3), strict=True):
        group['lr'] = lr
    assert c.prox_lrs(optimizer) == [0.3, 0.3]
    hm.plan.policy.prox_lr = 'role_group'
    assert c.prox_lrs(optimizer) == [0.2, 0.3]


def _names(hm: HingeModel, group: dict) -> set:
    names = {id(p): n for n, p in hm.net.named_parameters()}
    return {names[id(p)] for p in group['params']}


def test_param_groups_put_roles_apart_and_the_rest_at_the_lr_ratio():
    hm, args = hinge_model(RESNET8)
    groups = search_param_groups(hm, 0.1, 0.01, False)
    assert [g['lr'] for g in groups] == pytest.approx([0.001, 0.1, 0.1])
    ids = [{id(p) for p in g['params']} for g in groups]
    assert ids[1] == {id(f.members[0].param) for f in hm.families if f.role == 0}
    assert ids[2] == {id(f.members[0].param) for f in hm.families if f.role == 1}
    assert sum(len(i) for i in ids) == len(list(hm.net.parameters()))
    vgg, _ = hinge_model(SMALL['Hinge_VGG'], init='p-identity')
    groups = search_param_groups(vgg, 0.1, 0.01, False)
    bias = vgg.net.features[1][0][1].bias
    assert len(groups) == 2 and any(p is bias for p in groups[0]['params'])


def test_legacy_param_groups_follow_the_originals_kernel_size_rule():
    bottleneck, _ = hinge_model('--model Hinge_RESNET_BOTTLENECK --depth 11 --bottleneck')
    default, legacy = (search_param_groups(bottleneck, 0.1, 0.01, flag) for flag in (False, True))
    shortcuts = {n for n, _ in bottleneck.net.named_parameters() if 'downsample.0' in n}
    assert shortcuts and shortcuts <= _names(bottleneck, default[0])           # the paper: trained at lr * ratio
    assert not shortcuts & set().union(*(_names(bottleneck, g) for g in legacy))   # the original: in no group
    resnext, _ = hinge_model(SMALL['Hinge_RESNEXT'])
    default, legacy = (search_param_groups(resnext, 0.1, 0.01, flag) for flag in (False, True))
    outside = {'conv1.weight', 'layer2.0.shortcut.0.weight'}                 # 1x1 weights that are not matrices
    assert outside <= _names(resnext, default[0]) and outside <= _names(resnext, legacy[1])
    assert not outside & _names(resnext, legacy[0])


def test_legacy_freezing_stops_sgd_and_accumulates_gradients():
    hm, args = hinge_model(RESNET8, legacy_search=True)
    net = hm.net.eval()
    c = SearchController(hm, args, None)
    groups = search_param_groups(hm, 0.1, 0.1, True)
    groups[0]['lr'] = 0.0                     # nothing else moves, so every step sees the same gradient
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    c.freeze_compressible()
    a1 = hm.families[0].members[0].param
    conv1 = net.features[1][0].body[0][0].weight
    assert any(p is a1 for p in c.frozen) and any(p is conv1 for p in c.frozen)
    before = {'a1': a1.detach().clone(), 'conv1': conv1.detach().clone()}
    x = torch.randn(2, 3, 32, 32)
    grads = []
    c.start_epoch()
    for _ in range(2):
        c.zero_grad(optimizer)
        net(x).sum().backward()
        grads.append(a1.grad.clone())
        c.optimizer_step(optimizer)
    assert torch.equal(a1, before['a1']) and torch.equal(conv1, before['conv1'])
    assert grads[0].abs().sum() > 0 and torch.equal(grads[1], 2 * grads[0])     # accumulated, not replaced
    c.start_epoch()
    assert a1.grad is None
    bn = net.features[1][0].body[1].weight                                      # not frozen: it still moves
    moving = torch.optim.SGD([bn], lr=0.1)
    bn_before = bn.detach().clone()
    c.zero_grad(moving)
    net(x).sum().backward()
    c.optimizer_step(moving)
    assert not torch.equal(bn, bn_before)


def test_legacy_freezing_includes_the_merging_convolutions_where_the_search_measures_them_merged():
    wrn, args = hinge_model(SMALL['Hinge_WIDE_RESNET'], legacy_search=True)
    c = SearchController(wrn, args, None)
    c.freeze_compressible()
    assert any(p is wrn.net.layer1[0].conv1[0].weight for p in c.frozen)
    basic, args = hinge_model(SMALL['Hinge_ResNet_Basic'], legacy_search=True)   # measured unmerged, as original
    c = SearchController(basic, args, None)
    c.freeze_compressible()
    assert not any(p is basic.net.features[1][0].body[0][0].weight for p in c.frozen)


@pytest.mark.parametrize('legacy', [False, True])
def test_threshold_search_reaches_a_ratio_counted_independently(legacy):
    """The target is the FLOPs ratio of an actual compression counted by an independent hook counter; the
    search must land on a threshold whose compressed network has that ratio (or, for the original's walk,
    one within 0.001 of it)."""
    hm, args = hinge_model(SMALL['Hinge_WIDE_RESNET'], remain_percentage=0.1)
    with torch.no_grad():
        for fam in hm.families:
            for m in fam.members:
                m.param.mul_(torch.linspace(0.01, 1.0, m.param.shape[m.dim]).view(
                    [-1 if d == m.dim else 1 for d in range(m.param.dim())]))
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    chosen = float(torch.cat(list(norms.values())).median())

    def counted_ratio(threshold: float) -> float:
        copy_ = copy.deepcopy(hm)
        controller = SearchController(copy_, args, None)
        kept = controller.kept(controller.family_norms(), threshold)
        compress(copy_.families, kept, copy_.net)
        copy_.merge()
        return reference_flops(copy_.net, (3, 32, 32)) / hm.baseline_flops

    target = counted_ratio(chosen)
    search = c.search_threshold_legacy if legacy else c.search_threshold
    args.threshold = chosen * 0.5
    found = search(norms, target, ConsoleLog())
    tolerance = 0.001 if legacy else 1e-12
    assert abs(counted_ratio(found) - target) <= tolerance
    assert c.ratio_at(norms, found) == pytest.approx(counted_ratio(found), abs=1e-12)


def test_compression_report_lines_and_weights_only_information(tmp_path):
    hm, args = hinge_model(RESNET8, p1_p2_same_ratio=True)
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    flops, params = c.cost(norms, 0.5)
    kept = c.kept(norms, 0.5)
    lines, info, per_layer = compression_report(hm, norms, kept, 0.5, 7, flops, params)
    assert lines[1].startswith('ResBlock0  Layer1: channels -> orginal=16, compress=')
    assert 'Hinge searching epochs: 7  \nFinal nullifying threshold 0.50000000' in lines[-1]
    baseline = build_baseline(args, adapter_for(args.model).baseline)
    compressed = copy.deepcopy(hm)
    compress(compressed.families, {twin: kept[fam] for fam, twin in zip(hm.families, compressed.families, strict=True)},
             compressed.net)
    counted = [(reference_flops(net, (3, 32, 32)), sum(p.numel() for p in net.parameters() if p.requires_grad))
               for net in (baseline, compressed.net)]
    (flops_0, params_0), (flops_1, params_1) = counted
    assert flops_1 < flops_0 and params_1 < params_0
    assert (info['flops_original'], info['flops_remaining']) == pytest.approx((flops_0 / 1e9, flops_1 / 1e9))
    assert (info['params_original'], info['params_remaining']) == pytest.approx((params_0 / 1e3, params_1 / 1e3))
    assert (info['flops_ratio'], info['params_ratio']) == pytest.approx((flops_1 / flops_0 * 100,
                                                                         params_1 / params_0 * 100))
    assert len(info['info_layer0']) == 2 and len(per_layer[0]) == len(per_layer[1]) == 3
    assert len(kept[hm.families[1]]) == len(kept[hm.families[0]])          # --p1_p2_same_ratio
    save_torch(info, tmp_path / 'compression_information.pt')
    loaded = load_torch(tmp_path / 'compression_information.pt', 'test')
    assert torch.equal(loaded['info_layer2'][1]['pindex'], kept[hm.families[5]])
    dense, args = hinge_model(SMALL['Hinge_DenseNet'])
    zero_groups(dense)
    c = SearchController(dense, args, None)
    norms = c.family_norms()
    flops, params = c.cost(norms, 1e-6)
    kept = c.kept(norms, 1e-6)
    lines, info, per_layer = compression_report(dense, norms, kept, 1e-6, 3, flops, params)
    assert lines[1].startswith('DenseBlock0  Layer1: channels -> orginal=6 , compress=2 ')
    assert len(per_layer) == 1 and len(per_layer[0]) == len(dense.families)


def test_sgd_mode_adds_the_scaled_penalty_to_the_loss_and_pg_mode_does_not():
    hm, args = hinge_model(RESNET8, optimizer='SGD', regularization_factor=0.3)
    _set_matrices(hm, 2.0, 0.5)
    hooks = SearchHooks(SearchController(hm, args, None))
    hooks.extra_loss().backward()
    # d/dA of the column-norm sum of c*I is I; P1 and P2 average over the 3 blocks, times the factor.
    for fam in hm.families:
        a = fam.members[0].param
        assert torch.allclose(a.grad.squeeze(), torch.eye(a.shape[0]) * 0.3 / 3)
    assert torch.allclose(hooks.c.penalty, torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]) * 0.3)
    args.optimizer = 'PG'
    pg = SearchHooks(SearchController(hm, args, None))
    assert pg.extra_loss() is None and torch.allclose(pg.c.penalty, torch.tensor([2.0 * 112 / 3, 0.5 * 112 / 3]))
    assert pg.status() == ' / P1: 74.667 / P2: 18.667 / rP: 1.000'


class TinyResidual(nn.Module):
    """A stem and one residual block: the stem and the block's second convolution write one shared stream."""

    def __init__(self, stream: int = 8, inner: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stream, 3, padding=1), nn.BatchNorm2d(stream), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(stream, inner, 3, padding=1), nn.BatchNorm2d(inner), nn.ReLU(),
                                  nn.Conv2d(inner, stream, 3, padding=1), nn.BatchNorm2d(stream))
        self.head = nn.Linear(stream, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.body(x)).mean((2, 3)))


def random_norms(families, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {f: torch.rand(f.size, generator=generator) for f in families}


def test_the_even_ranking_cuts_every_family_to_the_same_fraction_keeping_its_largest_norms():
    hm, _ = hinge_model(SMALL['Hinge_WIDE_RESNET'])
    norms = random_norms(hm.families)
    scores = ranking_scores(hm.families, norms, 'even')
    for fraction in (0.25, 0.5, 0.75):
        for f in hm.families:
            kept = scores[f] > fraction
            assert abs(int(kept.sum()) - (1 - fraction) * f.size) <= 1
            assert float(norms[f][kept].min()) > float(norms[f][~kept].max())


def test_the_keep_shared_rankings_cut_a_shared_stream_only_after_every_other_group():
    hinge = model_hinge.Hinge(TinyResidual(), torch.zeros(1, 3, 8, 8))
    families = hinge.hm.families
    assert [shared_family(f) for f in families] == [True, False]      # the stream (stem, body.3) and body.0
    norms = random_norms(families)
    for ranking in ('norm-keep-shared', 'even-keep-shared'):
        scores = ranking_scores(families, norms, ranking)
        assert float(scores[families[0]].min()) > float(scores[families[1]].max())
        plain = ranking_scores(families, norms, ranking.split('-')[0])
        assert torch.equal(scores[families[1]], plain[families[1]])


def test_the_fastest_allocation_is_the_one_the_timer_finds_fastest_among_those_at_the_target():
    """The timer here prices the stream's channels ten times the others': the rankings that keep the stream
    whole must win; every ranking timed reaches the target FLOPs ratio, and none is timed twice. (A narrow stream
    and a wide inner layer: one inner channel is 1 % of the FLOPs, so the rankings can reach the ratio.)"""
    torch.manual_seed(0)
    hinge = model_hinge.Hinge(TinyResidual(stream=4, inner=96), torch.zeros(1, 3, 8, 8), ratio=0.7,
                              allocation='fastest', remain_percentage=0.1)
    controller, stream = hinge.controller, hinge.hm.families[0]
    norms = random_norms(hinge.hm.families)
    seen = []

    def fake_times(allocations):
        seen.extend(allocations)
        return [sum(len(k) * (10 if f is stream else 1) for f, k in kept.items()) / 1000 for kept in allocations]

    chosen = controller.fastest_allocation(norms, ConsoleLog(), fake_times)
    assert chosen.name.split(' ')[0].endswith('keep-shared')
    assert {name.split(' ')[0] for name in chosen.timed} <= set(RANKINGS)
    assert chosen.timed[chosen.name][1] == min(t for _, t in chosen.timed.values())
    assert all(abs(ratio - 0.7) <= 0.01 for ratio, _ in chosen.timed.values())
    assert len(seen) == len(chosen.timed)
    assert len({tuple(tuple(k.tolist()) for k in kept.values()) for kept in seen}) == len(seen)
    assert len(chosen.kept[stream]) == stream.size


def chain(first: int, second: int) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm and ReLU, pooling and a classifier."""
    return nn.Sequential(nn.Conv2d(3, first, 3, padding=1), nn.BatchNorm2d(first), nn.ReLU(),
                         nn.Conv2d(first, second, 3, padding=1), nn.BatchNorm2d(second), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(second, 10))


def test_flops_per_group_is_what_removing_the_groups_saves_by_an_independent_count():
    torch.manual_seed(0)
    model = chain(16, 24)
    full = reference_flops(model, (3, 8, 8))
    hinge = model_hinge.Hinge(model, torch.zeros(1, 3, 8, 8))
    costs = hinge.controller.flops_per_group()
    first, second = hinge.hm.families
    assert (first.size, second.size) == (16, 24)
    assert costs[first] == pytest.approx((full - reference_flops(chain(8, 24), (3, 8, 8))) / 8, rel=0.02)
    assert costs[second] == pytest.approx((full - reference_flops(chain(16, 12), (3, 8, 8))) / 12, rel=0.02)
    norms = {f: torch.ones(f.size) for f in hinge.hm.families}
    scores = ranking_scores(hinge.hm.families, norms, 'norm-per-flop', costs)
    assert costs[first] > costs[second] and float(scores[first].max()) < float(scores[second].min())
