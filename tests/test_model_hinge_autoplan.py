"""The automatic planner: the hand-written plans reproduced, channels followed through every kind of coupling, and
plans of torchvision models that convert and cut exactly."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from conftest import make_args
from model import build_baseline
from model_hinge import adapter_for, auto_plan
from model_hinge.autoplan import summary
from model_hinge.core import HingeModel
from model_hinge.errors import HingeError
from model_hinge.plan import Plan, split_path
from model_hinge.search import SearchController
from model_hinge.surgery import compress

FAST_TORCHVISION = ['resnet18', 'mobilenet_v3_small', 'shufflenet_v2_x0_5']
ALL_TORCHVISION = ['resnet18', 'resnet50', 'resnext50_32x4d', 'wide_resnet50_2', 'vgg11_bn', 'densenet121',
                   'mobilenet_v2', 'mobilenet_v3_small', 'efficientnet_b0', 'regnet_y_400mf', 'shufflenet_v2_x0_5',
                   'squeezenet1_1', 'googlenet', 'mnasnet0_5', 'convnext_tiny']


class Mixed(nn.Module):
    """A stem and a residual, an inverted residual with squeeze-excitation, a concatenation, a channel shuffle and
    flatten -> Linear: every coupling the planner must see, in a few small layers."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.expand, self.bn_e = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.bn_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16)
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project, self.bn_p = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.branch = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Conv2d(14, 12, 3, stride=2, padding=1)
        self.shuffled = nn.Conv2d(12, 12, 1)
        self.last = nn.Conv2d(12, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        y = F.relu(self.bn_dw(self.dw(F.relu(self.bn_e(self.expand(x))))))
        y = y * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        x = x + self.bn_p(self.project(y))
        z = F.relu(self.head(torch.cat([x, F.relu(self.branch(x))], 1)))
        z = self.shuffled(z)
        z = z.view(z.shape[0], 3, 4, 8, 8).transpose(1, 2).reshape(z.shape[0], 12, 8, 8)
        return self.fc(torch.flatten(F.relu(self.last(z)), 1))


def randomise(net: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine values away from their defaults, so that misplaced cuts show."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def drop_groups(hm: HingeModel, seed: int = 0) -> dict:
    """Zero a random third of every family's groups and make what reads them map zero to zero (A's bias,
    BatchNorm shifts); returns the surviving groups, whose compression must then preserve the function."""
    generator = torch.Generator().manual_seed(seed)
    kept = {}
    with torch.no_grad():
        for fam in hm.families:
            order = torch.randperm(fam.size, generator=generator)
            dropped, keep = order[: fam.size // 3], order[fam.size // 3:].sort().values
            channels = fam.channels(dropped)
            for m in fam.members:
                m.param.index_fill_(m.dim, m.slices_of(channels), 0.0)
            for cut in fam.cuts:
                if cut.name in ('bias', 'running_mean'):
                    owned = cut.owned(fam).view(fam.size, -1)
                    cut.tensor.index_fill_(cut.axis, owned[dropped].reshape(-1), 0.0)
            kept[fam] = keep
    return kept


def torchvision_model(name: str) -> nn.Module:
    extra = {'aux_logits': False, 'init_weights': False} if name == 'googlenet' else {}
    torch.manual_seed(0)
    return randomise(torchvision.models.get_model(name, num_classes=10, **extra))


def normalised_families(plan: Plan) -> dict:
    """(conv that A follows, group direction) -> set of cuts named by baseline module and role (A or basis), so
    that plans inserting A in different styles compare; legacy quirks are left out."""
    names = {}
    for i in plan.insertions:
        names[split_path(i.conv_path + '.x')[0]] = ('basis', i.conv)
        names[i.matrix_path] = ('A', i.conv)
    shifted = {split_path(i.conv)[0]: int(split_path(i.conv)[1]) for i in plan.insertions if i.style == 'after'}

    def key(tensor: str):
        module, attr = split_path(tensor)
        if module in names:
            return (*names[module], attr)
        parent, index = split_path(module)
        if parent in shifted and index.isdigit() and int(index) > shifted[parent] + 1:
            return ('module', f'{parent}.{int(index) - 1}', attr)
        return ('module', module, attr)

    families = {}
    for fam in plan.families:
        anchor = key(fam.members[0].tensor)[1]
        cuts = frozenset((key(c.tensor), c.axis, c.offset, None if c.positions is None else tuple(c.positions))
                         for c in fam.cuts)
        families[(anchor, fam.members[0].dim)] = cuts
    return families


PAPER = {'prune_coupled': False}   # the paper's choice: coupled channels are decomposed, never pruned
HAND_PLANS = {
    # Hinge model: (command line, planner option, families the planner adds and why)
    'Hinge_ResNet_Basic': ('--model ResNet --depth 14 --downsample_type A', PAPER, {('features.0.0', 1)}),
    'Hinge_WIDE_RESNET': ('--model Wide_ResNet --depth 10 --widen_factor 2', PAPER,
                          {('conv1', 0), ('layer1.0.shortcut.0', 1), ('layer2.0.shortcut.0', 1),
                           ('layer3.0.shortcut.0', 1)}),
    'Hinge_DenseNet': ('--model DenseNet --depth 16 --k 6', PAPER, {('features.0', 0)}),
    'Hinge_VGG': ('--model VGG --vgg_type ef', {**PAPER, 'decompose_free': True},
                  {('features.0.0', 0), ('features.0.0', 1)}),
}


@pytest.mark.parametrize('name', list(HAND_PLANS))
def test_the_hand_written_plans_are_reproduced(name):
    """With the paper's choice for coupled channels (decomposed), every family of the hand-written plan, with the
    same cuts, is in the automatic plan. The planner adds the
    convolutions the hand plans leave out: ResNet's stem (coupled with the first residual sums: decomposed); WRN's
    stem (read only by the first block's BatchNorm and shortcut convolution: pruned) and its shortcut
    convolutions (decomposed); DenseNet's first convolution (its channels enter every concatenation of the first
    block: pruned); VGG's first convolution (pruned and decomposed). For VGG it also cuts the classifier's inputs
    when it prunes the last block, which the hand plan keeps whole."""
    argv, options, added = HAND_PLANS[name]
    net = build_baseline(make_args(f'--template CIFAR10 {argv}'), adapter_for(name).baseline)
    hand = normalised_families(adapter_for(name).plan(net))
    auto = normalised_families(auto_plan(net, torch.zeros(1, 3, 32, 32), **options))
    assert set(auto) - set(hand) == added
    differing = {k for k in hand if auto.get(k) != hand[k]}
    if name == 'Hinge_VGG':
        last = list(hand)[-1]
        assert differing == {last}
        assert {c for c in auto[last] if c[0] == ('module', 'classifier', 'weight')}
        assert hand[last] <= auto[last]
    else:
        assert differing == set()


def test_each_coupling_decides_between_pruning_and_decomposition():
    net = Mixed()
    plan = auto_plan(net, torch.zeros(1, 3, 16, 16), **PAPER)
    assert summary(plan, net) == {
        'pruned': ['branch', 'head', 'last', 'se_reduce'],     # free: only convolutions and a Linear read them
        'decomposed': ['expand', 'project', 'se_expand', 'shuffled', 'stem'],  # residual, SE scale, shuffle
        'left alone': ['dw']}
    cuts = {f.members[0].tensor: f.cuts for f in plan.families}
    # the branch's channels sit at offset 8 of the concatenation that the head reads
    assert [(c.tensor, c.axis, c.offset) for c in cuts['branch.1.weight'] if c.tensor == 'head.0.weight'] == [
        ('head.0.weight', 1, 8)]
    # each of the last convolution's 5 channels owns its 16 positions of the flattened Linear input
    fc = [c for c in cuts['last.1.weight'] if c.tensor == 'fc.weight'][0]
    assert fc.positions == list(range(80))
    assert any('splits the channel axis' in note for note in plan.notes)


def test_a_depthwise_convolution_is_cut_with_the_channels_it_passes_through():
    net = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                        nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1))
    plan = auto_plan(net, torch.zeros(1, 3, 8, 8))
    first = [f for f in plan.families if f.members[0].tensor == '0.1.weight'][0]
    cut = {c.tensor for c in first.cuts}
    assert {'3.weight', '3.bias', '1.weight', '4.running_var', '6.0.weight'} <= cut
    assert summary(plan, net)['left alone'] == ['3']


class Grouped(nn.Module):
    """A convolution feeding a grouped one (4 groups: 2 inputs and 3 outputs each), and one whose grouped reader's
    outputs are coupled by a residual sum."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.g, self.bn_g = nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(12)
        self.b = nn.Conv2d(12, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.h = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(F.relu(self.bn_g(self.g(F.relu(self.bn_a(self.a(x)))))))
        y = y + self.h(F.relu(self.c(y)))
        return self.fc(y.mean((2, 3)))


def test_a_grouped_convolution_loses_whole_groups_with_the_convolution_feeding_it():
    net = Grouped()
    plan = auto_plan(net, torch.zeros(1, 3, 8, 8))
    layers = summary(plan, net)
    assert layers['pruned'] == ['a'] and layers['left alone'] == ['g', 'h']
    assert layers['decomposed'] == ['b', 'c']   # c's reader h has outputs in a residual sum: whole groups cannot go
    family = [f for f in plan.families if f.members[0].tensor == 'a.1.weight'][0]
    assert family.members[0].chunk == 2
    cuts = {c.tensor: c for c in family.cuts}
    assert cuts['g.weight'].positions == list(range(12))      # 3 outputs per group of 2 inputs
    assert cuts['b.0.weight'].axis == 1 and cuts['b.0.weight'].positions == list(range(12))
    assert 'g.weight' not in {c.tensor for c in family.cuts if c.axis == 1}
    assert any('h reads its channels' in note for note in plan.notes)


def test_the_grouped_network_converts_and_cuts_exactly():
    check_exact_compression(randomise(Grouped()), 8)


def test_an_operation_that_is_not_understood_leaves_its_channels_whole():
    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(torch.roll(self.a(x), 1, dims=1))

    net = Rolled()
    plan = auto_plan(net, torch.zeros(1, 3, 4, 4))
    assert summary(plan, net)['decomposed'] == ['a', 'b']
    assert any('roll' in note for note in plan.notes)


def test_a_module_applied_to_a_buffer_reads_no_channels():
    """A Linear applied to a registered table (Swin-V2's relative position MLP) plans: its output is a constant,
    and the channels it is added to are left uncut (decomposed), not a failure to run."""

    class TableBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.mlp = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(2, 4)
            self.register_buffer('table', torch.randn(5, 2))

        def forward(self, x):
            return self.conv(x) + self.mlp(self.table).mean(0).view(1, 4, 1, 1)

    net = TableBias()
    assert summary(auto_plan(net, torch.zeros(1, 3, 8, 8)), net) == {
        'pruned': [], 'decomposed': ['conv'], 'left alone': []}


def test_a_model_that_does_not_trace_or_run_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(HingeError, match='does not trace with torch.fx'):
        auto_plan(Branchy(), torch.zeros(1, 3, 4, 4))
    with pytest.raises(HingeError, match=r'does not run on example_inputs of shape \(1, 5, 4, 4\)'):
        auto_plan(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.zeros(1, 5, 4, 4))


def test_plans_round_trip_through_json():
    plan = auto_plan(Mixed(), torch.zeros(1, 3, 16, 16))
    assert Plan.from_json(plan.to_json()) == plan


def check_exact_compression(net: nn.Module, size: int, **plan_options) -> None:
    """Conversion preserves the output; cutting the zeroed groups preserves it; the would-be FLOPs from channel
    counts equal the counted FLOPs of the cut network."""
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = net(x)
    hm = HingeModel(net, auto_plan(net, x, **plan_options), (3, size, size), 'p-identity')
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), reference, atol=1e-5, rtol=1e-5)
        kept = drop_groups(hm)
        before = net(x)
    controller = SearchController(hm, make_args('--template CIFAR10 --optimizer PG'), None)
    predicted = controller.cost_polynomial()(torch.tensor([len(kept[f]) for f in hm.families]))
    compress(hm.families, kept, net)
    hm.retrace()
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5, rtol=1e-4)
    assert predicted == hm.cost()


def test_the_mixed_network_converts_and_cuts_exactly():
    check_exact_compression(randomise(Mixed()), 16)


@pytest.mark.parametrize('name', FAST_TORCHVISION)
def test_torchvision_models_convert_and_cut_exactly(name):
    check_exact_compression(torchvision_model(name), 32)


def test_coupled_writers_are_pruned_together_by_default():
    """By default (prune_coupled), the Mixed network's two couplings (the residual sum of stem and project, the
    squeeze-excitation scale of expand and se_expand) become one pruning family each, over both matrices' rows;
    the shuffled channels still cannot be cut and stay decomposed."""
    net = Mixed()
    plan = auto_plan(net, torch.zeros(1, 3, 16, 16))
    assert summary(plan, net) == {
        'pruned': ['branch', 'expand', 'head', 'last', 'project', 'se_expand', 'se_reduce', 'stem'],
        'decomposed': ['shuffled'], 'left alone': ['dw']}
    joint = sorted([m.tensor for m in f.members] for f in plan.families if len(f.members) > 1)
    assert joint == [['expand.1.weight', 'se_expand.1.weight'], ['stem.1.weight', 'project.1.weight']]
    residual = next(f for f in plan.families if f.members[0].tensor == 'stem.1.weight')
    readers = {(c.tensor, c.axis) for c in residual.cuts}
    assert {('expand.0.weight', 1), ('branch.0.weight', 1), ('head.0.weight', 1), ('bn.weight', 0),
            ('bn_p.running_var', 0)} <= readers


def cifar_resnet(depth: int) -> nn.Module:
    """Our CIFAR ResNet with the zero-padding (option A) shortcuts."""
    torch.manual_seed(0)
    args = make_args(f'--template CIFAR10 --model ResNet --depth {depth} --downsample_type A')
    return randomise(build_baseline(args, 'ResNet'))


def test_a_zero_padding_shortcut_is_cut_by_index_and_the_stream_pruned_across_stages():
    """An option-A shortcut (model.resnet.DownSampleA) pads c/2 zero channels on both sides of a stage's c, so
    channel i of stage 1's stream is channel i + 8 of stage 2's and i + 24 of stage 3's: one family prunes each
    such chain (the rows of all its writers there), one the channels stage 2's padding added (and stage 3's
    copies), one those stage 3's padding added; both shortcuts are cut by index, nothing is decomposed."""
    net = cifar_resnet(8)
    plan = auto_plan(net, torch.zeros(1, 3, 32, 32))
    assert summary(plan, net)['decomposed'] == []
    assert plan.indexed == {'features.2.0.downsample': [16, 32], 'features.3.0.downsample': [32, 64]}
    stream = [{m.tensor: m.positions for m in f.members} for f in plan.families
              if len(f.members) > 1 or f.members[0].positions]
    writers = ['features.0.0.1.weight'] + [f'features.{s}.0.body.3.1.weight' for s in (1, 2, 3)]
    assert stream == [
        dict(zip(writers, [None, None, list(range(8, 24)), list(range(24, 40))], strict=True)),
        dict(zip(writers[2:], [[*range(8), *range(24, 32)], [*range(16, 24), *range(40, 48)]], strict=True)),
        {writers[3]: [*range(16), *range(48, 64)]}]
    # group lasso's weight for a group of k rows: sqrt(k), k the writers (4, 2, 1)
    assert [f.weight for f in plan.families if len(f.members) > 1 or f.members[0].positions] == [2.0, 2 ** 0.5, 1.0]
    assert Plan.from_json(plan.to_json()) == plan


def test_the_cifar_resnet_with_zero_padding_shortcuts_converts_and_cuts_exactly():
    check_exact_compression(cifar_resnet(8), 32)


class PaddedStream(nn.Module):
    """A stream widened by two zero channels on each side, by a parameter-free module or in the model's forward."""

    def __init__(self, in_module: bool):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.widen = Widen() if in_module else None
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        wide = self.widen(x) if self.widen is not None else F.pad(x, [0, 0, 0, 0, 2, 2])
        return self.fc((wide + self.b(F.relu(x))).mean((2, 3)))


class Widen(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [0, 0, 0, 0, 2, 2])


def test_a_channel_pad_is_cut_only_inside_a_parameter_free_module():
    """In its own module the pad is cut by index: a's channel i with b's i + 2, b's outer channels alone.
    In the model's forward it cannot be: what it reads and adds stays whole, and b is decomposed."""
    wrapped = PaddedStream(in_module=True)
    plan = auto_plan(wrapped, torch.zeros(1, 3, 8, 8))
    assert plan.indexed == {'widen': [4, 8]}
    assert [{m.tensor: m.positions for m in f.members} for f in plan.families if f.members[0].dim == 0] == [
        {'a.1.weight': None, 'b.1.weight': [2, 3, 4, 5]}, {'b.1.weight': [0, 1, 6, 7]}]
    check_exact_compression(randomise(PaddedStream(in_module=True)), 8)
    inline = PaddedStream(in_module=False)
    plan = auto_plan(inline, torch.zeros(1, 3, 8, 8))
    assert plan.indexed == {} and summary(plan, inline)['decomposed'] == ['a', 'b']
    assert any(note.startswith('PaddedStream: it pads the channel axis') for note in plan.notes)
    check_exact_compression(randomise(PaddedStream(in_module=False)), 8)


@pytest.mark.parametrize('name', ['mixed', 'resnet18', 'mobilenet_v3_small'])
def test_decomposed_couplings_convert_and_cut_exactly(name):
    """The paper's choice (coupled channels decomposed) on the networks whose couplings the default prunes."""
    net = randomise(Mixed()) if name == 'mixed' else torchvision_model(name)
    check_exact_compression(net, 16 if name == 'mixed' else 32, **PAPER)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in ALL_TORCHVISION if n not in FAST_TORCHVISION])
def test_more_torchvision_models_convert_and_cut_exactly(name):
    check_exact_compression(torchvision_model(name), 64)


@pytest.mark.slow
def test_every_torchvision_classification_model_that_traces_is_planned():
    """Planning never fails on a model that traces; prints the coverage."""
    planned, untraceable = [], []
    for name in torchvision.models.list_models(module=torchvision.models):
        net = torchvision_model(name) if name != 'googlenet' else torchvision_model('googlenet')
        size = 224 if name.startswith(('vit', 'swin', 'maxvit')) else 64
        try:
            plan = auto_plan(copy.deepcopy(net), torch.zeros(1, 3, size, size))
        except HingeError as err:
            assert 'does not trace' in str(err) or 'does not run' in str(err), (name, err)
            untraceable.append(name)
            continue
        planned.append((name, len(plan.insertions)))
    print(f'\nplanned {len(planned)} models, {len(untraceable)} do not trace or run: {", ".join(untraceable)}')
    assert len(planned) >= 40
