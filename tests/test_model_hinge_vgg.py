"""model_hinge/vgg.py: the original's keys; columns and rows of one matrix; the classifier input stays."""


import pytest
import torch

from conftest import SMALL, assert_matches_manifest, hinge_model, make_args, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.errors import HingeError
from model_hinge.surgery import compress


def test_state_dict_equals_the_originals_manifest(shared):
    assert_matches_manifest('Hinge_VGG__VGG16_CIFAR10')


def test_columns_decompose_and_rows_prune_but_the_classifier_input_stays():
    hm, _ = hinge_model(SMALL['Hinge_VGG'], init='p-identity')
    blocks = [m for m in hm.net.features if isinstance(m, torch.nn.Sequential)][1:]
    widths = [b[0][1].out_channels for b in blocks]
    compress(hm.families, zero_groups(hm, every=2), hm.net)
    pruned = [b[0][1].out_channels for b in blocks]
    assert pruned[:-1] == [w // 2 for w in widths[:-1]] and pruned[-1] == widths[-1]
    assert [b[0][0].out_channels for b in blocks] == [w // 2 for w in widths]      # basis filters of each conv
    assert hm.net.classifier.in_features == widths[-1]


def test_imagenet_layout_is_refused():
    args = make_args('--template ImageNet --model Hinge_VGG')
    adapter = adapter_for(args.model)
    with torch.device('meta'):          # the layout is refused: no need for VGG-16's 138M initialised weights
        net = build_baseline(args, adapter.baseline)
    with pytest.raises(HingeError, match='Hinge_VGG'):
        adapter.plan(net)
