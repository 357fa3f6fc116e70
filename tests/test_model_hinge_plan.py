"""model_hinge/plan.py: plans are plain data that round-trip through JSON and rebuild compressed networks."""

import copy
import json

import pytest
import torch

from conftest import SMALL, hinge_model, make_args, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.errors import HingeError
from model_hinge.plan import Family, Insertion, Member, Plan
from model_hinge.surgery import compress, load_state


@pytest.mark.parametrize('name', list(SMALL))
def test_a_plan_round_trips_through_json(name):
    hm, _ = hinge_model(SMALL[name], init='p-identity')      # the plan does not depend on the initialisation
    text = json.dumps(hm.plan.to_dict())
    assert Plan.from_dict(json.loads(text)) == hm.plan
    assert hm.plan.model == name


@pytest.mark.parametrize('name', ['Hinge_RESNEXT', 'Hinge_DenseNet', 'Hinge_WIDE_RESNET'])
def test_a_saved_plan_rebuilds_the_compressed_network(name):
    hm, args = hinge_model(SMALL[name])
    kept = zero_groups(hm)
    compress(hm.families, kept, hm.net)
    state = hm.net.state_dict()
    plan = Plan.from_dict(json.loads(json.dumps(hm.plan.to_dict())))
    net = build_baseline(make_args(f'--template CIFAR10 {SMALL[name]}'), adapter_for(name).baseline)
    rebuilt = HingeModel(net, plan, (3, 32, 32), None)
    load_state(rebuilt.net, state, 'compressed', adapt=True)
    rebuilt.retrace()
    assert [(k, v.shape) for k, v in rebuilt.net.state_dict().items()] == [(k, v.shape) for k, v in state.items()]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.net.eval()(x), hm.net.eval()(x))
    assert rebuilt.cost() == hm.cost()


def test_malformed_or_inconsistent_plans_are_refused():
    with pytest.raises(HingeError, match='malformed'):
        Plan.from_dict({'model': 'X', 'families': [{'block': 0}]})
    member = [Member('a.weight', 0)]
    cases = [
        (Plan('X', insertions=[Insertion('a', style='inside')]), "insertion style 'inside'"),
        (Plan('X', families=[Family(0, 1, 1, member)]), 'family 0 role 1'),
        (Plan('X', families=[Family(0, 1, 0, member, same_as=3)]), 'family 0 same_as 3'),
        (Plan('X', families=[Family(0, 1, 0, [])]), 'family 0 has no members'),
        (Plan('X', insertions=[Insertion('s.1', style='after'), Insertion('s.3', style='after')]),
         "two 'after' insertions"),
    ]
    for plan, message in cases:
        with pytest.raises(HingeError, match=message):
            plan.check_form()
        with pytest.raises(HingeError, match=message):
            Plan.from_dict(plan.to_dict())


@pytest.mark.parametrize('name,style', [('Hinge_WIDE_RESNET', 'wrap'), ('Hinge_DENSENET_SVD', 'after')])
def test_insertion_paths_lead_to_the_conv_and_its_matrix(name, style):
    """After conversion the module at conv_path is the basis conv and the one at matrix_path the 1x1 matrix A:
    A applied after that conv computes the baseline's convolution (svd2 reconstructs it)."""
    torch.manual_seed(0)
    args = make_args(f'--template CIFAR10 {SMALL[name]}')
    adapter = adapter_for(name)
    baseline = build_baseline(args, adapter.baseline)
    net = copy.deepcopy(baseline)
    plan = adapter.plan(net)
    HingeModel(net, plan, (3, 32, 32), 'svd2')
    assert plan.insertions and {i.style for i in plan.insertions} == {style}
    for insertion in plan.insertions:
        original = baseline.get_submodule(insertion.conv)
        conv, matrix = net.get_submodule(insertion.conv_path), net.get_submodule(insertion.matrix_path)
        assert type(conv) is torch.nn.Conv2d and conv.in_channels == original.in_channels
        assert conv.kernel_size == original.kernel_size
        assert type(matrix) is torch.nn.Conv2d and matrix.kernel_size == (1, 1)
        x = torch.randn(2, original.in_channels, 8, 8)
        with torch.no_grad():
            assert torch.allclose(matrix(conv(x)), original(x), atol=1e-4)
