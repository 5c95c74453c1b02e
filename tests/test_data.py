import gzip

import numpy as np
import pytest
import torch

import ppvae
from ppvae.data import DatasetNotFoundError, binarize, read_idx, write_idx


def write_mnist_like(folder, n_train=30, n_test=10, prefix="", gz=True, names=("train", "t10k")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in zip(names, (n_train, n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    assert torch.equal(read_idx(tmp_path / name), torch.from_numpy(array))


def test_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_loads_from_idx_files(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist_like(folder, gz=layout == "flat")
    train = ppvae.data.load("mnist", split="train", root=tmp_path, download=False)
    test = ppvae.data.load("mnist", split="test", root=tmp_path, download=False)
    assert train.x.shape == (30, 1, 28, 28) and test.x.shape == (10, 1, 28, 28)
    assert train.x.dtype == torch.float32
    assert torch.allclose(train.x[:, 0] * 255, torch.from_numpy(arrays["train"][0]).float())
    assert torch.equal(test.y, torch.from_numpy(arrays["t10k"][1]).long())
    assert train.name == "mnist" and train.num_classes == 10


def test_emnist_letters_are_transposed_and_zero_based(tmp_path):
    arrays = write_mnist_like(tmp_path, prefix="emnist-letters-", names=("train", "test"))
    data = ppvae.data.load("emnist-letters", split="test", root=tmp_path, download=False)
    assert torch.allclose(data.x[0, 0] * 255, torch.from_numpy(arrays["test"][0][0]).float().T)
    assert torch.equal(data.y, torch.from_numpy(arrays["test"][1]).long() - 1)
    assert data.classes[0] == "a"


def test_alphanumeric_joins_mnist_digits_and_emnist_letters_in_one_label_space(tmp_path):
    digits = write_mnist_like(tmp_path, n_train=12, n_test=6)
    rng = np.random.default_rng(1)
    letters = rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    letter_labels = np.array([1, 2, 26, 13, 1, 5, 9, 26], dtype=np.uint8)  # EMNIST numbers its letters from 1
    for split in ("train", "test"):
        write_idx(tmp_path / f"emnist-letters-{split}-images-idx3-ubyte.gz", letters)
        write_idx(tmp_path / f"emnist-letters-{split}-labels-idx1-ubyte.gz", letter_labels)
    data = ppvae.data.load("alphanumeric", split="test", root=tmp_path, download=False)
    assert len(data) == 6 + 8 and data.num_classes == 36 and data.classes[:11] == [*"0123456789", "A"]
    assert torch.equal(data.y[:6], torch.from_numpy(digits["t10k"][1]).long())
    assert data.y[6:].tolist() == [10, 11, 35, 22, 10, 14, 18, 35]  # a -> A at 10, z -> Z at 35
    assert [data.classes[i] for i in data.y[6:9]] == ["A", "B", "Z"]
    assert torch.allclose(data.x[6, 0] * 255, torch.from_numpy(letters[0]).float().T)  # EMNIST's transpose undone
    write_mnist_like(tmp_path / "only-digits")
    with pytest.raises(DatasetNotFoundError, match="dataset 'emnist-letters'"):  # the missing half is named
        ppvae.data.load("alphanumeric", split="test", root=tmp_path / "only-digits", download=False)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        ppvae.data.load("fashion-mnist", split="train", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="fashion-mnist"):
        ppvae.data.load("cifar-7")


def test_own_arrays_npy_and_pt(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(12, 10, 14), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    data = ppvae.data.load(tmp_path / "imgs.npy")
    assert data.shape == (1, 10, 14) and len(data) == 12 and data.x.max() <= 1
    torch.save({"x": torch.rand(5, 3, 8, 8), "y": torch.arange(5)}, tmp_path / "d.pt")
    data = ppvae.data.load(str(tmp_path / "d.pt"))
    assert data.shape == (3, 8, 8) and torch.equal(data.y, torch.arange(5))
    channels_last = np.zeros((4, 9, 9, 3), dtype=np.uint8)
    np.save(tmp_path / "cl.npy", channels_last)
    assert ppvae.data.load(tmp_path / "cl.npy").shape == (3, 9, 9)


def test_own_arrays_bad_values_are_explained(tmp_path):
    np.save(tmp_path / "big.npy", np.full((3, 4, 4), 7.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ppvae.data.load(tmp_path / "big.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(ValueError, match="expected images of shape"):
        ppvae.data.load(tmp_path / "vec.npy")


def test_image_folder_with_class_subfolders(tmp_path):
    from torchvision.io import write_png

    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(3):
            write_png(torch.randint(0, 256, (1, 6, 7), dtype=torch.uint8), str(tmp_path / label / f"{i}.png"))
    data = ppvae.data.load(tmp_path)
    assert data.shape == (1, 6, 7) and len(data) == 6
    assert data.classes == ["cats", "dogs"] and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    write_png(torch.zeros((1, 5, 5), dtype=torch.uint8), str(tmp_path / "dogs" / "odd.png"))
    with pytest.raises(ValueError, match="all images must share one shape"):
        ppvae.data.load(tmp_path)


def test_binarization_methods():
    # grey levels not drawn from torch's generator: a draw seeded alike would reuse the same uniforms
    x = torch.linspace(0, 1, 1600).reshape(100, 1, 4, 4)
    static_a, static_b = binarize(x, "static", seed=3), binarize(x, "static", seed=3)
    assert torch.equal(static_a, static_b)
    assert not torch.equal(binarize(x, "dynamic"), binarize(x, "dynamic"))
    assert torch.equal(binarize(x, "threshold"), (x > 0.5).float())
    assert binarize(x, None) is x
    assert set(static_a.unique().tolist()) <= {0.0, 1.0}
    # a fixed draw is a fair coin per pixel: its mean follows the grey levels
    assert abs(binarize(x.repeat(20, 1, 1, 1), "static").mean() - x.mean()) < 0.01
    with pytest.raises(ValueError, match="binarize must be one of"):
        binarize(x, "otsu")


def test_random_split_is_reproducible():
    data = ppvae.data.ImageDataset(torch.rand(50, 1, 2, 2), torch.arange(50))
    (train_a, test_a), (_, test_b) = data.random_split(0.2, seed=1), data.random_split(0.2, seed=1)
    assert len(test_a) == 10 and len(train_a) == 40
    assert torch.equal(test_a.y, test_b.y)
    assert not set(test_a.y.tolist()) & set(train_a.y.tolist())


def test_real_fashion_mnist(fashion):
    train, test = fashion
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert 0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    assert train.y.bincount().tolist() == [6000] * 10
    assert gzip  # the Debian package ships .gz files; read_idx opens them


def test_the_finite_check_passes_finite_values_whose_sum_overflows_and_catches_one_bad_pixel():
    from ppvae.data import check_finite

    huge = torch.full((4, 1, 2, 2), 3e38)  # every pixel finite; their sum is not
    check_finite(huge)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(6, 1, 3, 3)
        x[4, 0, 1, 2] = bad
        with pytest.raises(ValueError, match=r"^1 of 6 images hold NaN or infinite pixels \(the first at index 4\)"):
            check_finite(x)
