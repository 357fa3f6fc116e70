"""scripts/benchmark_original.py without timing: medians and ratios, the table, the batch window, the searched
state's factors."""

import importlib.util

import pytest
import torch

from conftest import ROOT

spec = importlib.util.spec_from_file_location('benchmark_original', ROOT / 'scripts' / 'benchmark_original.py')
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def runs_fixture() -> dict:
    stages = {'baseline_ips': 100.0, 'search_ips': 50.0, 'converging_ips': 80.0, 'prox_ms': 4.0,
              'flops_eval_ms': 30.0, 'threshold_compress_s': 0.5}
    return {
        ('original', 'stages', 20, 64): [dict(stages), dict(stages, search_ips=70.0), dict(stages, search_ips=60.0)],
        ('original', 'stages', 20, 128): [dict(stages, prox_ms=6.0)],
        ('ours', 'stages', 20, 64): [dict(stages, search_ips=120.0, prox_ms=1.0, threshold_compress_legacy_s=0.25)],
        ('ours', 'stages', 20, 128): [dict(stages, prox_ms=2.0), {'error': 'ours stages ResNet-20 batch 128: boom'}],
    }


def test_compare_takes_medians_pools_batch_sizes_and_divides_ours_by_the_original():
    rows = {(r['figure'], r['batch']): r for r in bench.compare(runs_fixture(), [20], [64, 128])}
    search = rows[('search training (PG, prox step, lr adjustment), images/s', 64)]
    assert (search['original'], search['ours'], search['ratio']) == (60.0, 120.0, 2.0)
    prox = rows[('proximal step, ms', None)]
    assert (prox['original'], prox['ours'], prox['ratio']) == (4.0, 1.5, 0.375)
    legacy = rows[('threshold search + compression, s (ours: legacy walk)', None)]
    assert (legacy['original'], legacy['ours']) == (0.5, 0.25)
    assert not any(r['figure'].startswith('search epoch') for r in rows.values())


def test_table_says_which_side_is_faster_for_rates_and_for_times():
    lines = bench.markdown_table(bench.compare(runs_fixture(), [20], [64, 128]))
    assert lines[0].startswith('| figure | ResNet | batch | original | ours | ours/original |')
    assert '| search training (PG, prox step, lr adjustment), images/s | 20 | 64 | 60 | 120 | 2.000 | 2.00x faster |' \
        in lines
    assert '| proximal step, ms | 20 | – | 4 | 1.5 | 0.375 | 2.67x faster |' in lines
    assert '| baseline training, images/s | 20 | 128 | 100 | 100 | 1.000 | 1.00x faster |' in lines


def test_timed_batches_stops_after_the_limit_and_counts_the_images_after_the_warm_up():
    loader = [(torch.zeros(n, 3), torch.zeros(n)) for n in (4, 4, 4, 2)]
    timed = bench.TimedBatches(loader, 3)
    assert len(timed) == 4
    assert [len(labels) for _, labels in timed] == [4, 4, 4]
    assert len(timed.stamps) == 4 and timed.sizes == [4, 4, 4]
    assert timed.images_per_second(1) == pytest.approx(8 / (timed.stamps[3] - timed.stamps[1]))
    with pytest.raises(ValueError):
        bench.TimedBatches(loader, 5)


def test_searched_factors_zero_shrink_and_keep_fixed_shares():
    factors = bench.searched_factors(20, torch.Generator().manual_seed(1))
    assert int((factors == 0).sum()) == 8
    small = factors[(factors > 0) & (factors < 1)]
    assert len(small) == 6 and bool(((small >= 1e-4) & (small <= 1e-2)).all())
    assert int((factors == 1).sum()) == 6
    assert int((bench.searched_factors(4, torch.Generator().manual_seed(1)) == 0).sum()) == 2
