"""model_hinge/groups.py: group norms and scaling across many families at once."""

import torch

from model_hinge.groups import GroupBank, GroupFamily, Member, split_into_banks


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
