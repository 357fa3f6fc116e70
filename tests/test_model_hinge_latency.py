"""The latency model: interpolation, agreement with the timing of the network it predicts, caching, the latency
search and the API's target 'latency' (all with fake timers: no speed is measured here)."""

import json

import pytest
import torch
import torch.nn as nn

import model_hinge
from conftest import hinge_model, make_args
from model import build_baseline
from model_hinge import adapter_for, latency
from model_hinge.config import HingeConfig
from model_hinge.latency import CachedTimer, ConvShape, Grid, LatencyModel, conv_sizes, fold_pairs, grid_widths
from model_hinge.search import SearchController, threshold_candidates
from model_hinge.surgery import compress
from utils.rundir import ConsoleLog

OVERHEAD = 1e-4   # seconds per convolution call: what makes a pair that keeps all its basis filters pay to fold


def fake_conv_seconds(shape: ConvShape, out: int, inp: int) -> float:
    """A convolution's time: its multiply-accumulates at 1 us each, plus a per-call overhead (bilinear in the
    widths, so the model's interpolation is exact)."""
    h, w = shape.size
    return 1e-6 * out * inp * shape.kernel[0] * shape.kernel[1] * h * w / (shape.stride[0] * shape.stride[1]) \
        + OVERHEAD


class FakeTimer:
    """Convolutions by fake_conv_seconds; a network as the sum of its convolutions plus `rest`; counts calls."""

    def __init__(self, rest: float = 0.01, name: str = 'fake'):
        self.rest, self.name, self.calls = rest, name, 0

    def environment(self) -> str:
        return self.name

    def conv(self, shape: ConvShape, out: int, inp: int) -> float:
        self.calls += 1
        return fake_conv_seconds(shape, out, inp)

    def networks(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        return [self.network(net, input_dim) for net in nets]

    def relative(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        seconds = self.networks(nets, input_dim)
        return [s / seconds[0] for s in seconds]

    def network(self, net: nn.Module, input_dim: tuple) -> float:
        self.calls += 1
        sizes = conv_sizes(net, input_dim)
        return self.rest + sum(fake_conv_seconds(ConvShape.of(m, sizes[m][0]), m.out_channels,
                                                 m.in_channels // m.groups) for m in sizes)


class Refusing(FakeTimer):
    def conv(self, shape, out, inp):
        raise AssertionError('a cached build timed a convolution')

    def network(self, net, input_dim):
        raise AssertionError('a cached build timed a network')


def some_counts(hm, seed: int = 0) -> torch.Tensor:
    """Groups kept per family: all of them in every third family, otherwise a random number."""
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor([f.size if i % 3 == 0 else int(torch.randint(1, f.size + 1, (1,), generator=generator))
                         for i, f in enumerate(hm.families)])


def compressed_to(hm, counts: torch.Tensor) -> None:
    """Compress hm in place, each family keeping its first counts[f] groups."""
    compress(hm.families, {f: torch.arange(int(c)) for f, c in zip(hm.families, counts, strict=True)}, hm.net)
    hm.retrace()


def test_grid_is_exact_at_grid_points_bilinear_between_and_flat_beyond():
    def f(out, inp):
        return float(out ** 2 * inp + 3 * inp)       # not bilinear in out: interpolation differs from f between

    outs, ins = [2, 4, 8], [1, 3]
    grid = Grid(outs, ins, torch.tensor([[f(o, i) for i in ins] for o in outs]))
    for o in outs:
        for i in ins:
            assert float(grid(torch.tensor(float(o)), torch.tensor(float(i)))) == pytest.approx(f(o, i))
    # between (4, 1), (8, 1), (4, 3), (8, 3): weights 0.25 on 8 and 0.5 on 3
    expected = 0.75 * (0.5 * f(4, 1) + 0.5 * f(4, 3)) + 0.25 * (0.5 * f(8, 1) + 0.5 * f(8, 3))
    assert float(grid(torch.tensor(5.0), torch.tensor(2.0))) == pytest.approx(expected)
    assert expected != pytest.approx(f(5, 2))
    assert float(grid(torch.tensor(20.0), torch.tensor(0.0))) == pytest.approx(f(8, 1))
    many = grid(torch.tensor([[2.0, 5.0]]), torch.tensor([[1.0, 2.0]]))
    assert many.shape == (1, 2) and float(many[0, 1]) == pytest.approx(expected)


def test_grid_widths_are_eighths_of_the_cut_axes_and_the_narrowest_in_whole_groups():
    eighths = tuple(i / 8 for i in range(1, 9))
    assert grid_widths(16, True, 1, eighths) == [1, 2, 4, 6, 8, 10, 12, 14, 16]
    assert grid_widths(12, True, 1, eighths) == [1, 2, 3, 4, 6, 8, 9, 10, 12]
    assert grid_widths(16, False, 1, eighths) == [16]
    assert grid_widths(32, True, 8, eighths) == [8, 16, 24, 32]        # a grouped conv loses whole groups of 8
    assert ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 8, False, 'zeros', (8, 8)).channels(24, 4) == (12, 24, 3)


@pytest.mark.parametrize('model,rest', [('Hinge_ResNet_Basic_SVD', 0.01), ('Hinge_ResNet_Basic', 0.0)])
def test_the_prediction_is_the_timing_of_the_compressed_network(model, rest):
    """With a timer whose convolution times are bilinear in the widths, the model predicts exactly the time the
    same timer gives the actually compressed network: pairs apart, or folded where that pays."""
    hm, args = hinge_model(f'--model {model} --depth 8 --downsample_type A', init='p-identity')
    timer = FakeTimer(rest)
    model_ = LatencyModel(hm, timer)
    assert model_.scale == pytest.approx(1.0)
    baseline = build_baseline(args, adapter_for(model).baseline)
    assert model_.baseline == pytest.approx(timer.network(baseline, (3, 32, 32)))
    counts = some_counts(hm)
    pays = model_.folds_that_pay(counts)
    assert 0 < len(pays) < len(model_.pairs) - len(hm.plan.merges)
    compressed_to(hm, counts)
    if hm.plan.merges:
        hm.merge()
    assert float(model_.seconds(counts, fold=False)) == pytest.approx(timer.network(hm.net, (3, 32, 32)))
    fold_pairs(hm, pays)
    assert float(model_.seconds(counts)) == pytest.approx(timer.network(hm.net, (3, 32, 32)))
    assert float(model_.seconds(counts)) < float(model_.seconds(counts, fold=False))


def test_a_second_build_reads_the_cache_file_and_times_nothing(tmp_path):
    hm, _ = hinge_model('--model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A', init='p-identity')
    path = tmp_path / 'latency.json'
    first = CachedTimer(FakeTimer(), path)
    measured = LatencyModel(hm, first)
    first.save()
    assert first.measured > 0 and path.is_file()
    again = CachedTimer(Refusing(), path)
    cached = LatencyModel(hm, again)
    assert again.measured == 0
    counts = some_counts(hm, seed=1)
    assert float(cached.seconds(counts)) == float(measured.seconds(counts))
    assert cached.baseline == measured.baseline
    elsewhere = CachedTimer(Refusing(name='another device'), path)
    with pytest.raises(AssertionError, match='timed'):
        LatencyModel(hm, elsewhere)
    (tmp_path / 'other.json').write_text(json.dumps({'something': 'else'}))
    with pytest.raises(ValueError, match='other.json is not a latency cache'):
        CachedTimer(FakeTimer(), tmp_path / 'other.json')


class NonMonotone:
    """A latency model stand-in whose ratio rises and falls with the channels kept."""

    baseline = 1.0

    def ratio(self, counts: torch.Tensor, fold: bool = True) -> torch.Tensor:
        return (torch.sin(counts.double().sum(-1) / 3) + 1) / 2


def test_the_latency_search_picks_the_threshold_whose_prediction_is_closest():
    hm, _ = hinge_model('--model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A', init='p-identity')
    controller = SearchController(hm, HingeConfig.create(target='latency', remain_percentage=0.1), None,
                                  NonMonotone())
    generator = torch.Generator().manual_seed(0)
    norms = {f: torch.rand(f.size, generator=generator) for f in hm.families}
    counter = controller.survivors(norms)
    candidates = threshold_candidates(norms)
    ratios = [float(NonMonotone().ratio(counter.counts(t))) for t in candidates]
    for target in (0.2, 0.55, 0.9):
        chosen = controller.search_threshold(norms, target, ConsoleLog())
        best = min(abs(r - target) for r in ratios)
        assert abs(ratios[candidates.index(chosen)] - target) == best
        assert controller.target_ratio(norms, chosen) == pytest.approx(ratios[candidates.index(chosen)])


class Proportional:
    """A latency model stand-in: the fraction of the groups kept."""

    baseline = 1.0

    def __init__(self, total: int):
        self.total = total

    def ratio(self, counts: torch.Tensor, fold: bool = True) -> torch.Tensor:
        return counts.double().sum(-1) / self.total


def proportional_search() -> tuple:
    """ResNet-8 (decomposed) with random group norms, a Proportional latency model and a latency-target
    controller on them."""
    hm, _ = hinge_model('--model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A', init='p-identity')
    model = Proportional(sum(f.size for f in hm.families))
    controller = SearchController(hm, HingeConfig.create(target='latency', remain_percentage=0.1), None, model)
    generator = torch.Generator().manual_seed(0)
    return hm, model, controller, {f: torch.rand(f.size, generator=generator) for f in hm.families}


def slower_than_predicted(hm, model: Proportional, timed: list):
    """A measure that records the kept groups it times and finds every network 1.25x slower than predicted."""
    def measure(kept: dict) -> float:
        timed.append(kept)
        return 1.25 * float(model.ratio(torch.tensor([len(kept[f]) for f in hm.families])))
    return measure


def test_measured_passes_take_the_models_error_out():
    """The compressed network runs 1.25x slower than predicted: the passes aim the prediction at target / 1.25, so
    the chosen threshold's measured ratio is the closest to the target any threshold gives (the prediction alone
    lands at 1.25 x the target), with at most three timings (the last confirms the second)."""
    hm, model, controller, norms = proportional_search()
    timed = []
    measure = slower_than_predicted(hm, model, timed)

    first = controller.search_threshold(norms, 0.6, ConsoleLog())
    assert measure(controller.kept(norms, first)) == pytest.approx(0.75, abs=0.03)
    timed.clear()
    chosen = controller.measured_threshold(norms, first, 0.6, measure, ConsoleLog())
    counter = controller.survivors(norms)
    best = min(abs(1.25 * float(model.ratio(counter.counts(t))) - 0.6) for t in threshold_candidates(norms))
    assert abs(measure(controller.kept(norms, chosen)) - 0.6) == pytest.approx(best)
    assert 2 <= len(timed) - 1 <= 3


def test_passes_that_straddle_the_target_aim_between_the_two_networks():
    """The model's error is not one factor: a network's real ratio is 2 x predicted - 0.3. The first timing (0.9
    at 0.6 predicted) sends the aim to 0.4 (real 0.5, below the target); the two timed networks straddle the
    target, so the next aim lies between them, where the real ratio is linear in the prediction (0.45: real 0.6).
    The passes end at the threshold whose real ratio is the closest any threshold gives, after at most four
    timings; correcting by the latest factor alone was still 0.011 off after five."""
    hm, model, controller, norms = proportional_search()
    counter = controller.survivors(norms)
    timed = []

    def real(kept: dict) -> float:
        return 2 * float(model.ratio(torch.tensor([len(kept[f]) for f in hm.families]))) - 0.3

    def measure(kept: dict) -> float:
        timed.append(kept)
        return real(kept)

    first = controller.search_threshold(norms, 0.6, ConsoleLog())
    chosen = controller.measured_threshold(norms, first, 0.6, measure, ConsoleLog())
    best = min(abs(2 * float(model.ratio(counter.counts(t))) - 0.3 - 0.6) for t in threshold_candidates(norms))
    assert abs(real(controller.kept(norms, chosen)) - 0.6) == pytest.approx(best)
    assert len(timed) <= 4


def test_a_measurement_within_the_tolerance_is_timed_again_before_it_is_accepted():
    """The first timing of the predicted threshold is a lucky one (exactly the target; the network really runs at
    1.25 x its prediction): timed again, its mean misses, so the passes go on and choose the threshold whose real
    ratio is the closest to the target, every accepted threshold timed at least twice."""
    hm, model, controller, norms = proportional_search()
    counter = controller.survivors(norms)
    first = controller.search_threshold(norms, 0.6, ConsoleLog())
    timed = []

    def counts(kept: dict) -> tuple[int, ...]:
        return tuple(len(kept[f]) for f in hm.families)

    def real(kept: dict) -> float:
        return 1.25 * float(model.ratio(torch.tensor(counts(kept))))

    def measure(kept: dict) -> float:
        timed.append(counts(kept))
        return 0.6 if len(timed) == 1 else real(kept)

    chosen = controller.measured_threshold(norms, first, 0.6, measure, ConsoleLog())
    best = min(abs(1.25 * float(model.ratio(counter.counts(t))) - 0.6) for t in threshold_candidates(norms))
    assert abs(real(controller.kept(norms, chosen)) - 0.6) == pytest.approx(best)
    assert timed.count(counts(controller.kept(norms, chosen))) >= 2


def test_passes_stop_when_the_aim_returns_to_a_network_already_timed():
    """A target below what any threshold reaches: the first timing misses, the corrected aim picks the same (most
    compressed) threshold again, and no timing is repeated on it."""
    hm, model, controller, norms = proportional_search()
    timed = []
    measure = slower_than_predicted(hm, model, timed)

    first = controller.search_threshold(norms, 0.01, ConsoleLog())
    assert controller.measured_threshold(norms, first, 0.01, measure, ConsoleLog()) == first
    assert len(timed) == 1


def test_a_latency_target_without_measured_times_is_refused_in_one_sentence():
    hm, _ = hinge_model('--model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A', init='p-identity')
    controller = SearchController(hm, HingeConfig.create(target='latency'), None)
    with pytest.raises(ValueError, match="target 'latency' needs measured layer times"):
        controller.minimum_ratio()


def test_config_refuses_bad_targets_batches_and_caches():
    cases = [({'target': 'speed'}, "target 'speed' is not one of flops, latency"),
             ({'latency_batch': 0}, 'latency_batch 0 must be at least 1'),
             ({'latency_cache': 3}, 'latency_cache 3 must be a file path')]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            HingeConfig.create(**options)
    assert HingeConfig.create(target='latency', latency_batch=None).latency_batch is None


class Residual(nn.Module):
    """A stem and two residual convolutions (coupled by the sums: decomposed under the paper's choice,
    `paper_plan`) and a free one (pruned, merged)."""

    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b, self.free = (nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.a(torch.relu(x))
        x = x + self.b(torch.relu(x))
        return self.head(self.free(torch.relu(x)).mean((2, 3)))


def paper_plan(model: nn.Module, x: torch.Tensor) -> model_hinge.Plan:
    """The automatic plan with coupled channels decomposed (the paper's choice), not pruned together."""
    return model_hinge.auto_plan(model, x, prune_coupled=False)


def scaled_norms(hinge: model_hinge.Hinge, large: str) -> None:
    """The groups of the A after `large` far above the others' (spread) norms: that pair keeps every filter."""
    with torch.no_grad():
        for spec, fam in zip(hinge.plan.families, hinge.hm.families, strict=True):
            m = fam.members[0]
            size = m.param.shape[m.dim]
            keep = spec.members[0].tensor == f'{large}.1.weight'
            scale = torch.full((size,), 100.0) if keep else torch.linspace(0.01, 1, size)
            m.param.mul_(scale.view([-1 if d == m.dim else 1 for d in range(m.param.dim())]))


@pytest.mark.parametrize('fold', ['cheaper', 'plan'])
def test_compress_folds_the_pairs_that_do_not_pay_by_default(fold):
    torch.manual_seed(0)
    model = Residual()
    x = torch.randn(1, 3, 8, 8)
    hinge = model_hinge.Hinge(model, x, paper_plan(model, x), ratio=0.7, init_method='p-identity')
    assert {i.conv for i in hinge.plan.insertions if not i.merge} == {'stem', 'a', 'b'}
    scaled_norms(hinge, 'a')
    small = hinge.compress() if fold == 'cheaper' else hinge.compress(fold=fold)
    assert isinstance(small.free, nn.Conv2d)                          # the plan merges pruned convolutions
    assert isinstance(small.a, nn.Conv2d) == (fold == 'cheaper')      # kept every filter: fewer FLOPs folded
    assert isinstance(small.b, nn.Sequential)                          # lost filters: cheaper as a pair


def test_the_api_targets_latency_and_reports_the_prediction_next_to_the_measurement(monkeypatch, tmp_path):
    monkeypatch.setattr(latency, 'DeviceTimer', lambda batch, device, channels_last: FakeTimer(rest=0.0))
    torch.manual_seed(0)
    model = Residual()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r'leaves 0\.\d+ of the measured latency'):
        model_hinge.Hinge(model, x, paper_plan(model, x), ratio=0.01, target='latency', init_method='p-identity')
    assert isinstance(model.a, nn.Conv2d)                               # refused before the model changed
    cache = tmp_path / 'times.json'
    hinge = model_hinge.Hinge(model, x, paper_plan(model, x), ratio=0.7, target='latency', init_method='p-identity',
                              latency_cache=cache)
    assert cache.is_file()
    scaled_norms(hinge, 'a')
    hinge.compress()
    report = hinge.report()
    assert report['latency_predicted_ms'] == pytest.approx(report['latency_measured_ms'])
    assert report['latency_ratio_predicted'] == pytest.approx(report['searched_ratio'])
    assert abs(report['searched_ratio'] - 0.7) < 0.1
    assert isinstance(model.a, nn.Conv2d) and isinstance(model.b, nn.Sequential)
    assert hinge.ratio() == report['latency_ratio_predicted']


def test_auto_plan_prunes_free_convolutions_only_unless_asked_to_decompose_them_too():
    net = build_baseline(make_args('--template CIFAR10 --model ResNet --depth 8 --downsample_type A'))
    x = torch.zeros(1, 3, 32, 32)
    for decompose_free, directions in ((False, {0}), (True, {0, 1})):
        plan = model_hinge.auto_plan(net, x, decompose_free=decompose_free)
        conv1 = [f.members[0].dim for f in plan.families if f.members[0].tensor.startswith('features.1.0.body.0.')]
        assert set(conv1) == directions
        merged = [i.merge for i in plan.insertions if i.conv == 'features.1.0.body.0']
        assert merged == [not decompose_free]


def test_an_exporting_timer_times_programs_of_eval_copies_under_its_own_environment(monkeypatch):
    modes = []
    export = torch.export.export

    def spy(module, args, **kwargs):
        modes.append(module.training)
        return export(module, args, **kwargs)

    monkeypatch.setattr(torch.export, 'export', spy)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())      # in training mode
    timer = latency.DeviceTimer(2, 'cpu', repeats=1, exported=True)
    assert len(timer.networks([net, net], (3, 8, 8))) == 2
    assert modes == [False, False] and net.training           # eval copies exported: batch statistics not baked in
    assert timer.relative([net, net], (3, 8, 8))[0] == 1.0 and modes == [False] * 4   # against the first, paired
    assert timer.environment() != latency.DeviceTimer(2, 'cpu', repeats=1).environment()   # caches kept apart


def test_a_paired_ratio_is_immune_to_a_load_that_changes_between_rounds(monkeypatch):
    """Two networks whose true times are 2:1 on a shared machine: its speed changes from round to round, and in
    two rounds a short spell slows one network's call 4x (the small one's in round 2, the big one's in round 1).
    The clock advances by cost x slowdown. The median of the ratios within a round is exactly 1/2; the ratio of
    the two medians is 1.04 (the check that this load pattern bites)."""
    drift = [1.0, 3.0, 1.2, 2.5, 1.1]
    spells = {(1, 0): 4.0, (2, 1): 4.0}                                   # (round, network): extra slowdown
    clock, calls = [0.0], [0]

    def network(index: int, cost: float):
        def run():
            timed = calls[0] - 2                                           # two warm-up calls, then two per round
            if timed >= 0:
                clock[0] += cost * drift[timed // 2] * spells.get((timed // 2, index), 1.0)
            calls[0] += 1
        return run

    monkeypatch.setattr(latency.time, 'perf_counter', lambda: clock[0])
    times = latency.round_seconds([network(0, 2.0), network(1, 1.0)], torch.device('cpu'), len(drift))
    assert latency.paired_ratios(times) == [1.0, 0.5]
    calls[0] = 0
    big, small = latency.median_seconds([network(0, 2.0), network(1, 1.0)], torch.device('cpu'), len(drift))
    assert small / big == pytest.approx(1.0417, abs=1e-4)


class Slowing(FakeTimer):
    """A machine that slows down: every call of `networks` finds it 1.5 times slower than the last; networks timed
    together (`relative`) share the call's speed."""

    def __init__(self):
        super().__init__(rest=0.01)
        self.slowdown = 1.0

    def networks(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        self.slowdown *= 1.5
        return [self.slowdown * self.network(net, input_dim) for net in nets]


def test_the_report_pairs_the_compressed_network_with_the_baseline_on_a_machine_that_slows_down():
    """The measured ratio of the report is the compressed network's time over the baseline's in the same rounds:
    the fake timer's exact ratio, although the machine slowed down since the model was built. Its ms (timed
    alone, later) carry the slowdown; the prediction error compares the two ratios."""
    hm, args = hinge_model('--model Hinge_ResNet_Basic --depth 8 --downsample_type A', init='p-identity')
    timer = Slowing()
    model_ = LatencyModel(hm, timer)
    baseline = latency.baseline_network(hm)
    counts = some_counts(hm)
    compressed_to(hm, counts)
    hm.merge()
    report = latency.latency_report(model_, counts, False, baseline, hm.net, (3, 32, 32))
    exact = timer.network(hm.net, (3, 32, 32)) / timer.network(baseline, (3, 32, 32))
    assert exact < 0.9
    assert report['latency_ratio_measured'] == pytest.approx(exact)
    assert report['latency_ratio_predicted'] == pytest.approx(exact, rel=1e-3)    # the model interpolates exactly
    assert report['latency_error'] == pytest.approx(0.0, abs=1e-3)
    assert report['latency_measured_ms'] > 1.4 * report['latency_predicted_ms']
