"""model_hinge/vgg.py: the converted VGG has the original's keys; columns and rows of one matrix."""

import json

import pytest

from conftest import SPEC, make_args
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from utils.errors import UsageError


def test_state_dict_equals_the_originals_manifest(shared):
    manifest = json.loads((SPEC / 'state_dicts' / 'Hinge_VGG__VGG16_CIFAR10.json').read_text())
    args = make_args(' '.join(manifest['argv']))
    adapter = adapter_for(args.model)
    hm = HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 32, 32), init=True)
    assert [[k, list(v.shape)] for k, v in hm.net.state_dict().items()] == manifest['state_dict']
    assert (hm.baseline_flops, hm.baseline_params) == (manifest['baseline_flops'], manifest['baseline_params'])


def test_every_matrix_has_column_and_row_groups_and_the_last_rows_stay():
    args = make_args('--template CIFAR10 --model Hinge_VGG --vgg_type A')
    adapter = adapter_for(args.model)
    hm = HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 32, 32), init=True)
    columns, rows = hm.families[0::2], hm.families[1::2]
    assert all(c.members[0].param is r.members[0].param for c, r in zip(columns, rows, strict=True))
    assert [c.members[0].dim for c in columns] == [1] * 7 and [r.members[0].dim for r in rows] == [0] * 7
    assert all(r.cuts for r in rows[:-1]) and rows[-1].cuts == []


def test_imagenet_layout_is_refused():
    args = make_args('--template ImageNet --model Hinge_VGG')
    adapter = adapter_for(args.model)
    with pytest.raises(UsageError, match='Hinge_VGG'):
        HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 224, 224), init=False)
