"""data/: CIFAR reader and batched augmentation, the demo set, ImageFolder data, clear failures."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CIFAR_SUBSET, FIXTURES, make_args
from data import build_data, cifar, demo
from data.batches import TensorBatches
from utils.errors import UsageError


def test_cifar_subset_loads_with_the_original_test_transform(shared):
    d = build_data(make_args(f'--template CIFAR10 --dir_data {CIFAR_SUBSET} --batch_size 64'))
    assert (d.train.num_samples, d.test.num_samples, d.input_dim) == (5085, 1017, (3, 32, 32))
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape == (5085, 32, 32, 3)
    assert set(d.test.labels.tolist()) == set(range(10))
    images, labels = next(iter(d.test))
    assert images.shape == (500, 3, 32, 32)
    # inputs_256.npy / labels_256.npy are what the original's ToTensor + Normalize produced.
    assert np.array_equal(images[:256].numpy(), np.load(FIXTURES / 'inputs_256.npy'))
    assert np.array_equal(labels[:256].numpy(), np.load(FIXTURES / 'labels_256.npy'))


def test_normalisation_by_hand(shared):
    d = build_data(make_args(f'--template CIFAR10 --dir_data {CIFAR_SUBSET} --test_only'))
    images, _ = next(iter(d.test))
    raw = d.test.images[3, 5, 7].double()
    mean = torch.tensor([125.3, 123.0, 113.9]) / 255
    std = torch.tensor([63.0, 62.1, 66.7]) / 255
    assert torch.allclose(images[3, :, 5, 7].double(), (raw / 255 - mean) / std, atol=1e-6)


def _candidates(image: torch.Tensor, flips: bool) -> list[torch.Tensor]:
    """Every 32x32 crop of the 4-pixel zero-padded image, and its mirror."""
    padded = torch.zeros(40, 40, 3, dtype=image.dtype)
    padded[4:36, 4:36] = image
    crops = [padded[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
    return crops + [c.flip(1) for c in crops] if flips else crops


@pytest.mark.parametrize('flip', [True, False])
def test_batched_augmentation_is_a_padded_crop_and_optional_flip(flip):
    images = torch.randint(1, 256, (6, 32, 32, 3), dtype=torch.uint8)
    loader = TensorBatches(images, torch.arange(6), 6, (0, 0, 0), (1, 1, 1), train=True, flip=flip, seed=3)
    g = loader._generator()
    order = torch.randperm(6, generator=g)
    out = loader._augment(order, g)
    flipped_any = False
    for i, src in enumerate(order):
        matches = [k for k, c in enumerate(_candidates(images[src], flip)) if torch.equal(c, out[i])]
        assert matches, 'augmented image is not a padded crop of its source'
        flipped_any |= matches[0] >= 81
    assert flipped_any or not flip


def test_shuffling_is_seeded_per_epoch():
    images = torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8)
    loader = TensorBatches(images, torch.arange(50), 10, (0, 0, 0), (1, 1, 1), train=True, seed=1)
    first = [labels for _, labels in loader]
    again = [labels for _, labels in loader]
    loader.set_epoch(2)
    other = [labels for _, labels in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert sorted(torch.cat(first).tolist()) == list(range(50))


def test_cifar100_layout(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name, n in (('train', 7), ('test', 5)):
        written[name] = {'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8), 'fine_labels': list(range(n))}
        with open(folder / name, 'wb') as f:
            pickle.dump(written[name], f)
    d = build_data(make_args(f'--template CIFAR100 --dir_data {tmp_path} --batch_size 4'))
    assert (d.train.num_samples, d.test.num_samples) == (7, 5)
    assert d.test.labels.tolist() == [0, 1, 2, 3, 4]
    # Rows are stored channel-planar (R plane, G plane, B plane); pixel (0, 0) is at 0, 1024, 2048.
    assert d.test.images[0, 0, 0].tolist() == written['test']['data'][0][[0, 1024, 2048]].tolist()


def test_missing_cifar_offline_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(cifar, '_download', offline)
    with pytest.raises(UsageError, match='cifar-10-batches-py.*could not be downloaded'):
        build_data(make_args(f'--template CIFAR10 --dir_data {tmp_path}'))
    assert list(tmp_path.iterdir()) == []


def test_batches_that_need_code_to_unpickle_are_refused(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ('x',))

    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(folder / name, 'wb') as f:
            pickle.dump({'data': Evil(), 'labels': []}, f)
    with pytest.raises(UsageError, match='not a CIFAR batch'):
        build_data(make_args(f'--template CIFAR10 --dir_data {tmp_path}'))


def test_demo_set_is_deterministic_balanced_and_cifar_shaped():
    a_images, a_labels = demo.generate(200, seed=5)
    b_images, b_labels = demo.generate(200, seed=5)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert a_images.shape == (200, 32, 32, 3) and a_images.dtype == torch.uint8
    assert torch.bincount(a_labels).tolist() == [20] * 10
    d = build_data(make_args('--template Demo --batch_size 32'))
    assert (d.train.num_samples, d.test.num_samples) == (demo.N_TRAIN, demo.N_TEST)


def test_image_folders(tmp_path):
    from PIL import Image

    for split in ('train', 'val'):
        for cls in ('a', 'b'):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((64, 64, 3), 40 * i, dtype=np.uint8)).save(tmp_path / split / cls / f'{i}.png')
    d = build_data(make_args(f'--template Tiny_ImageNet --dir_data {tmp_path} --batch_size 4 --n_threads 0'))
    images, labels = next(iter(d.train))
    assert images.shape == (4, 3, 64, 64) and (d.train.num_samples, d.test.num_samples) == (6, 6)
    with pytest.raises(UsageError, match='--crop 5'):
        build_data(make_args(f'--template Tiny_ImageNet --dir_data {tmp_path} --crop 5'))
    with pytest.raises(UsageError, match='ImageFolder'):
        build_data(make_args(f'--template ImageNet --dir_data {tmp_path / "missing"}'))


def test_train_and_test_sets_must_agree():
    with pytest.raises(UsageError, match='--data_test'):
        build_data(make_args('--data_train Demo --data_test CIFAR10'))


def test_download_fills_only_the_missing_files(tmp_path, monkeypatch):
    import torchvision.datasets as tv

    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    (folder / 'data_batch_1').write_bytes(b'mine')

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            target = Path(root) / 'cifar-10-batches-py'
            target.mkdir()
            for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
                (target / name).write_bytes(b'downloaded')

    monkeypatch.setattr(tv, 'CIFAR10', FakeCIFAR10)
    assert cifar.locate('CIFAR10', str(tmp_path)) == folder
    assert (folder / 'data_batch_1').read_bytes() == b'mine'
    assert (folder / 'test_batch').read_bytes() == b'downloaded'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cifar-10-batches-py']
