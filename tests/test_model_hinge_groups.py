"""model_hinge/groups.py: binding a plan to a network, group norms and scaling across many families at once."""

import pytest
import torch

from model_hinge.errors import HingeError
from model_hinge.groups import GroupBank, GroupFamily, Member, bind, exact_norms, split_into_banks
from model_hinge.plan import Cut as PlanCut
from model_hinge.plan import Family as PlanFamily
from model_hinge.plan import Member as PlanMember
from model_hinge.plan import Plan


def test_norms_of_several_families_and_joint_chunked_groups():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4, 6, 1, 1))
    b = torch.nn.Parameter(torch.randn(5, 3, 1, 1))
    conv1 = torch.nn.Parameter(torch.randn(8, 2, 1, 1))
    conv3 = torch.nn.Parameter(torch.randn(3, 8, 1, 1))
    families = [GroupFamily(0, 1, 0, [Member(a, 1)]), GroupFamily(0, 2, 1, [Member(b, 0)]),
                GroupFamily(1, 1, 0, [Member(conv1, 0, chunk=2), Member(conv3, 1, chunk=2)])]
    bank = GroupBank(families)
    expected = torch.cat([a.detach().squeeze().norm(dim=0), b.detach().squeeze().norm(dim=1),
                          ((conv1.detach().squeeze() ** 2).sum(1).view(4, 2).sum(1)
                           + (conv3.detach().squeeze() ** 2).sum(0).view(4, 2).sum(1)).sqrt()])
    assert torch.allclose(bank.norms(), expected)
    assert [f.size for f in families] == [6, 5, 4]
    assert families[2].channels(torch.tensor([1, 3])).tolist() == [2, 3, 6, 7]
    assert torch.allclose(bank.family_sums(torch.ones(15)), torch.tensor([6.0, 5.0, 4.0]))
    assert torch.allclose(bank.role_sums(torch.tensor([1.0, 2.0, 3.0]), 2), torch.tensor([4.0, 2.0]))


def test_scaling_multiplies_exactly_the_group_slices():
    a = torch.nn.Parameter(torch.ones(3, 4, 1, 1))
    bank = GroupBank([GroupFamily(0, 1, 0, [Member(a, 1)])])
    bank.scale_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.equal(a.detach().squeeze(), torch.tensor([[0.0, 1.0, 2.0, 3.0]]).expand(3, 4))


def test_members_with_positions_own_only_those_slices():
    """A writer's rows split between two families (a residual stream's share and the channels its padding adds):
    each family's norms are those of its listed rows, in list order, with the other member's listed rows; the
    rows neither lists are left out of every norm and never scaled."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 3, 1, 1))
    b = torch.nn.Parameter(torch.randn(2, 3, 1, 1))
    shared = GroupFamily(0, 1, 0, [Member(a, 0, positions=torch.tensor([4, 1])), Member(b, 0)])
    alone = GroupFamily(1, 1, 0, [Member(a, 0, positions=torch.tensor([0, 2]))])
    rows_a, rows_b = a.detach().flatten(1), b.detach().flatten(1)
    expected_shared = (rows_a[[4, 1]].pow(2).sum(1) + rows_b.pow(2).sum(1)).sqrt()
    assert shared.size == alone.size == 2
    banks = [GroupBank(bank) for bank in split_into_banks([shared, alone])]
    assert len(banks) == 2
    assert torch.allclose(banks[0].norms(), expected_shared)
    assert torch.allclose(exact_norms(shared), expected_shared)
    assert torch.allclose(banks[1].norms(), rows_a[[0, 2]].norm(dim=1))
    before = a.detach().clone()
    banks[1].scale_(torch.tensor([0.0, 2.0]))
    assert torch.equal(a.detach()[0], torch.zeros_like(before[0])) and torch.equal(a.detach()[2], 2 * before[2])
    assert torch.equal(a.detach()[[1, 3, 4, 5]], before[[1, 3, 4, 5]])


def test_gradient_norms_treat_missing_gradients_as_zero():
    a = torch.nn.Parameter(torch.ones(2, 2, 1, 1))
    b = torch.nn.Parameter(torch.ones(2, 2, 1, 1))
    bank = GroupBank([GroupFamily(0, 1, 0, [Member(a, 1)]), GroupFamily(0, 2, 1, [Member(b, 1)])])
    (a * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)).sum().backward()
    assert torch.allclose(bank.grad_norms(), torch.tensor([2 ** 0.5, 8 ** 0.5, 0.0, 0.0]))


def test_rows_and_columns_of_one_matrix_go_to_consecutive_banks():
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2, 2))
    cols_a, rows_a = GroupFamily(0, 1, 0, [Member(a, 1)]), GroupFamily(0, 2, 1, [Member(a, 0)])
    cols_b, rows_b = GroupFamily(1, 1, 0, [Member(b, 1)]), GroupFamily(1, 2, 1, [Member(b, 0)])
    assert split_into_banks([cols_a, rows_a, cols_b, rows_b]) == [[cols_a, cols_b], [rows_a, rows_b]]
    assert split_into_banks([cols_a, cols_b]) == [[cols_a, cols_b]]


def test_exact_norms_follow_the_originals_views():
    """One member: the norm over the other dimension of the (out, in) matrix. Joint groups: conv1 rows and
    conv3 columns of a cardinality group concatenated row by row, as the original's ResNeXt does."""
    torch.manual_seed(0)
    a = torch.randn(6, 4, 1, 1)
    assert torch.equal(exact_norms(GroupFamily(0, 1, 0, [Member(a, 1)])), torch.norm(a.squeeze().t(), p=2, dim=1))
    assert torch.equal(exact_norms(GroupFamily(0, 1, 0, [Member(a, 0)])), torch.norm(a.squeeze().t(), p=2, dim=0))
    conv1, conv3 = torch.randn(8, 5, 1, 1), torch.randn(7, 8, 1, 1)
    joint = torch.cat([conv1.squeeze().view(4, -1), conv3.squeeze().t().reshape(4, -1)], dim=1)
    fam = GroupFamily(0, 1, 0, [Member(conv1, 0, chunk=2), Member(conv3, 1, chunk=2)])
    assert torch.equal(exact_norms(fam), torch.norm(joint, p=2, dim=1))
    assert torch.allclose(GroupBank([fam]).norms(), exact_norms(fam))


def _plan(families, model='Test'):
    return Plan(model, families=families)


def test_bind_refuses_plans_that_do_not_fit_the_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 6, 1))
    good = PlanFamily(0, 1, 0, [PlanMember('0.weight', 0)], [PlanCut('1.weight', 0), PlanCut('2.weight', 1)])
    fam = bind(_plan([good]), net)[0]
    assert fam.members[0].param is net[0].weight and fam.cuts[1].module is net[2]
    cases = [
        (PlanFamily(0, 1, 0, [PlanMember('3.weight', 0)]), 'does not have'),
        (PlanFamily(0, 1, 0, [PlanMember('0.weight', 0)], [PlanCut('2.weight', 1, offset=1)]), 'cuts positions 1..5'),
        (PlanFamily(0, 1, 0, [PlanMember('0.weight', 0), PlanMember('2.weight', 0)]), 'same number of groups'),
        (PlanFamily(0, 1, 0, [PlanMember('0.weight', 0, chunk=3)]), 'same number of groups'),
        (PlanFamily(0, 1, 0, [PlanMember('0.weight', 0, positions=[1, 4])]), r'positions 1\.\.4 of a tensor with 4'),
        (PlanFamily(0, 1, 0, [PlanMember('0.weight', 0, positions=[])]), 'lists no positions'),
    ]
    for spec, message in cases:
        with pytest.raises(HingeError, match=message):
            bind(_plan([spec]), net)
    listed = PlanFamily(0, 1, 0, [PlanMember('0.weight', 0, positions=[3, 1]), PlanMember('2.weight', 0, chunk=3)])
    assert bind(_plan([listed]), net)[0].size == 2
    twice = PlanFamily(1, 1, 0, [PlanMember('0.bias', 0)], [PlanCut('2.weight', 1)])
    with pytest.raises(HingeError, match='two families cut the same positions'):
        bind(_plan([good, twice]), net)
