"""model_hinge/resnext.py: the original's keys; whole cardinality groups across conv1 rows and conv3 columns."""


import pytest
import torch

from conftest import SMALL, assert_matches_manifest, hinge_model
from model_hinge.search import SearchController
from model_hinge.surgery import compress


@pytest.mark.parametrize('name', ['Hinge_RESNEXT__ResNeXt20_32x1_CIFAR10', 'Hinge_RESNEXT__ResNeXt20_32x1_CIFAR100',
                                  'Hinge_RESNEXT__ResNeXt164_32x1_CIFAR10'])
def test_state_dict_equals_the_originals_manifest(shared, name):
    assert_matches_manifest(name)


def test_a_group_is_a_whole_cardinality_group_and_removing_it_removes_a_group_of_the_grouped_conv():
    hm, args = hinge_model(SMALL['Hinge_RESNEXT'])
    block = hm.net.layer2[0]
    cardinality, chunk = block.conv2.groups, block.conv2.out_channels // block.conv2.groups
    assert chunk == 4                                                     # bottleneck width doubles per stage
    with torch.no_grad():                                                 # group 1: conv1 rows and conv3 columns
        block.conv1.weight[chunk:2 * chunk] = 0
        block.conv3.weight[:, chunk:2 * chunk] = 0
        block.bn1.bias[chunk:2 * chunk] = 0
        block.bn1.running_mean[chunk:2 * chunk] = 0
    fam = hm.families[1]
    c = SearchController(hm, args, None)
    norms = c.family_norms()
    assert norms[fam][1] == 0 and bool((norms[fam][[0, 2, 3]] > 0).all())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = hm.net.eval()(x)
    compress(hm.families, c.kept(norms, 1e-9), hm.net)
    assert (block.conv2.groups, block.conv2.out_channels, block.bn2.num_features) == \
        (cardinality - 1, (cardinality - 1) * chunk, (cardinality - 1) * chunk)
    assert block.conv3.in_channels == (cardinality - 1) * chunk and hm.net.layer1[0].conv2.groups == cardinality
    with torch.no_grad():
        assert torch.allclose(hm.net(x), before, atol=1e-5)


def test_legacy_compression_reproduces_the_originals_conv3_layout():
    hm, args = hinge_model(SMALL['Hinge_RESNEXT'])
    conv3 = hm.net.layer1[0].conv3.weight.detach().clone()
    fam = hm.families[0]
    kept = {f: torch.arange(f.size) for f in hm.families}
    kept[fam] = torch.tensor([0, 2, 3])
    compress(hm.families, kept, hm.net, legacy=True)
    chunk = fam.chunk
    columns = torch.cat([torch.arange(g * chunk, (g + 1) * chunk) for g in (0, 2, 3)])
    # the original: rows of conv3^T per cardinality group, selected, then viewed as (out, kept channels)
    rows = conv3.squeeze().t()[columns]
    assert torch.equal(hm.net.layer1[0].conv3.weight.squeeze(), rows.reshape(conv3.shape[0], -1))
