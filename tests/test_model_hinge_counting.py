"""The fast would-be cost agrees with what it replaces: select_kept's survivors and the counted compressed network."""

import copy

import pytest
import torch

from conftest import SMALL, hinge_model, reference_flops
from model_hinge.complexity import ComplexityModel, Polynomial
from model_hinge.counting import CostPolynomial, SurvivorCounter
from model_hinge.search import SearchController
from model_hinge.surgery import compress, kept_groups, select_kept


def awkward_norms(families, seed: int) -> dict:
    """Norms with exact zeros, ties and a few all-zero or almost all-zero families."""
    generator = torch.Generator().manual_seed(seed)
    norms = {}
    for i, fam in enumerate(families):
        n = torch.rand(fam.size, generator=generator).float()
        n[torch.rand(fam.size, generator=generator) < 0.3] = 0.0
        n[torch.rand(fam.size, generator=generator) < 0.2] = 0.5
        if i % 7 == 3:
            n.zero_()
        elif i % 7 == 5:
            n[1:] = 0.0
        norms[fam] = n
    return norms


@pytest.mark.parametrize('same_ratio,multiple', [(False, 1), (True, 1), (False, 4), (True, 3)])
@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic_SVD', 'Hinge_RESNET_BOTTLENECK', 'Hinge_DenseNet'])
def test_survivor_counts_equal_select_kept_at_every_threshold(name, same_ratio, multiple):
    hm, args = hinge_model(SMALL[name])
    norms = awkward_norms(hm.families, 0)
    counter = SurvivorCounter(hm.families, norms, 0.25, same_ratio, multiple)
    for threshold in (0.0, 1e-9, 0.1, 0.5, 0.5000001, 0.9, 1.0, float('inf')):
        kept = kept_groups(hm.families, norms, threshold, 0.25, same_ratio, multiple)
        assert counter.counts(threshold).tolist() == [len(kept[f]) for f in hm.families], threshold


def test_a_threshold_one_float32_step_above_a_norm_drops_it_and_one_below_keeps_it():
    hm, _ = hinge_model(SMALL['Hinge_ResNet_Basic_SVD'])
    fam = hm.families[0]
    norms = {f: torch.linspace(1.0, 2.0, f.size) for f in hm.families}
    value = float(norms[fam][3])
    counter = SurvivorCounter(hm.families, norms, 0.1, False)
    above = float(torch.nextafter(torch.tensor(value), torch.tensor(9.0)))
    assert counter.counts(value)[0] == len(select_kept(norms[fam], value, 0.1)) == fam.size - 3
    assert counter.counts(above)[0] == fam.size - 4


def test_polynomial_arithmetic_matches_integers():
    x, y = Polynomial({(0,): 1}), Polynomial({(1,): 1})
    p = (10 - 2 * x) * (7 - y) + 3 * x - 5
    at = p.compile()(torch.tensor([[0.0, 0.0], [2.0, 3.0], [4.0, 7.0]]))
    assert at.tolist() == [65.0, 25.0, 7.0]


@pytest.mark.parametrize('name', sorted(SMALL))
def test_cost_polynomial_equals_the_counted_compressed_network(name):
    hm, args = hinge_model(SMALL[name])
    controller = SearchController(hm, args, None)
    norms = awkward_norms(hm.families, 1)
    threshold = 0.4
    flops, params = controller.cost(norms, threshold)
    clone = copy.deepcopy(hm)
    kept = controller.kept(norms, threshold)
    compress(clone.families, {c: kept[f] for c, f in zip(clone.families, hm.families, strict=True)}, clone.net)
    if controller.merged_view:
        clone.merge()
    assert flops == reference_flops(clone.net, (3, 32, 32))
    assert params == sum(p.numel() for p in clone.net.parameters() if p.requires_grad)


def test_the_cost_follows_the_network_after_compression():
    hm, args = hinge_model(SMALL['Hinge_ResNet_Basic_SVD'])
    controller = SearchController(hm, args, None)
    norms = awkward_norms(hm.families, 2)
    before = controller.cost(norms, 0.0)
    compress(hm.families, controller.kept(norms, 0.4), hm.net)
    hm.retrace()
    smaller = controller.family_norms()
    assert controller.cost(smaller, 0.0) == hm.cost() != before


def test_foldable_pairs_are_counted_at_their_cheaper_form():
    """Families keeping all their groups make folding pay, those keeping few do not: the polynomial with the
    foldable pairs gives the counted FLOPs and parameters of the network compressed and then folded where cheaper."""
    hm, _ = hinge_model(SMALL['Hinge_ResNet_Basic_SVD'], init='p-identity')
    kept = {f: torch.arange(f.size if i % 3 == 0 else max(1, f.size // 4)) for i, f in enumerate(hm.families)}
    counts = torch.tensor([len(kept[f]) for f in hm.families])
    predicted = CostPolynomial(hm.families, hm.complexity, hm.merge_pairs(), hm.foldable_pairs())(counts)
    apart = CostPolynomial(hm.families, hm.complexity, hm.merge_pairs())(counts)
    compress(hm.families, kept, hm.net)
    hm.retrace()
    assert len(hm.merge_where_cheaper()) > 0
    counted = ComplexityModel.trace(hm.net, (3, 32, 32))
    assert predicted == (counted.flops(), counted.params())
    assert predicted[0] < apart[0]
