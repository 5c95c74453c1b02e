import pytest
import torch

import ppvae


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion():
    """Real Fashion-MNIST (train, test); `make test` puts it on disk first."""
    try:
        return ppvae.data.load("fashion-mnist", split="train", download=False), ppvae.data.load(
            "fashion-mnist", split="test", download=False
        )
    except ppvae.data.DatasetNotFoundError as error:
        pytest.skip(f"Fashion-MNIST not on disk (run `make data`): {error}")


@pytest.fixture
def binary_images():
    """64 random binary 28x28 images."""
    return torch.bernoulli(torch.full((64, 1, 28, 28), 0.3))
