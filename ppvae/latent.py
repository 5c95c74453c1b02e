"""Numbers about a latent space and about samples: what the course material measures, one call each.

- `encodings`: posterior means and scales of q(z | x) for a dataset, in batches;
- `active_units`: dimensions whose posterior mean varies across the data,
  Var_x E_q[z_d] > 0.01 (Burda, Grosse & Salakhutdinov, 2016) - the rest collapsed onto the prior;
- `knn_accuracy`: how well the latent means separate the classes, by k-nearest neighbours;
- `mmd` / `mmd_test`: maximum mean discrepancy between two sets of images, Gaussian kernel
  with the median-heuristic bandwidth, and a permutation test's p-value;
- `anomaly_scores` and `auroc`: per-image log-likelihood as an outlier score, and how well
  it separates two sets;
- walks through z, as tensors of images for the classic figures (``ppvae.plot`` draws them):
  `manifold`, `traverse`, `interpolate`, `attribute`, `uncertainty`,
  and `project` for two dimensions of many.

Everything works through the models' public API, so it applies to any ppvae model with a latent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ppvae.data import Data, ImageDataset
from ppvae.estimator import LatentVariableModel, labels_for
from ppvae.estimator import class_index as label_index
from ppvae.infer.batches import slices

ACTIVE_THRESHOLD = 0.01


def _takes_labels(model: LatentVariableModel) -> bool:
    return model.capabilities.condition == "labels"


@torch.no_grad()
def encodings(
    model: LatentVariableModel,
    data: Data,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    site: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, scales) of q(z | x) for every image, each (N, dim) on the CPU, of the latent ``site`` (by default
    the one ``encode`` returns); labels ``y`` (or the dataset's) for a model conditioned on labels."""
    if not model.capabilities.latent:
        raise ValueError(f"{type(model).__name__} has no latent variables")
    x = model.prepare(data)  # once: batch by batch, each batch would draw the same binarisation noise
    labels = labels_for(model, data, y)
    means, scales = [], []
    for xb, yb in slices(batch_size, x, labels):
        loc, scale = model.encode(xb, yb, return_scale=True, binarize=None, site=site)
        means.append(loc.cpu())
        scales.append(scale.cpu())
    return torch.cat(means), torch.cat(scales)


@dataclass
class ActiveUnits:
    """How many latent dimensions carry information: ``count`` of those whose ``variance`` (of the
    posterior mean across images, per dimension) exceeds ``threshold``."""

    count: int
    variance: torch.Tensor
    posterior_variance: torch.Tensor  # E_x[Var_q(z_d)] per dimension: near 1 where a unit collapsed to the prior
    threshold: float


def active_units(
    model: LatentVariableModel,
    data: Data,
    y: torch.Tensor | None = None,
    threshold: float = ACTIVE_THRESHOLD,
    site: str | None = None,
) -> ActiveUnits:
    """Active units (Burda et al., 2016): dimensions d with Var_x E_q[z_d | x] > ``threshold``, of the latent
    ``site`` (by default the one ``encode`` returns; ask for each layer of a hierarchy in turn)."""
    means, scales = encodings(model, data, y, site=site)
    variance = means.var(0) if means.shape[0] > 1 else torch.zeros(means.shape[1])
    return ActiveUnits(int((variance > threshold).sum()), variance, (scales**2).mean(0), threshold)


def knn_accuracy(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 5,
    chunk: int = 1000,
) -> float:
    """Share of test codes whose ``k`` nearest training codes (Euclidean) vote for their own label."""
    if k < 1 or k > train_codes.shape[0]:
        raise ValueError(f"k must be between 1 and the {train_codes.shape[0]} training codes, got {k}")
    train_codes, test_codes = train_codes.double(), test_codes.double()
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for i in range(0, test_codes.shape[0], chunk):
        nearest = torch.cdist(test_codes[i : i + chunk], train_codes).topk(k, largest=False).indices
        votes = torch.nn.functional.one_hot(train_labels[nearest], classes).sum(1).double()
        votes += torch.nn.functional.one_hot(train_labels[nearest[:, 0]], classes) * 0.5  # ties: the nearest wins
        correct += int((votes.argmax(1) == test_labels[i : i + chunk]).sum())
    return correct / test_codes.shape[0]


def latent_knn_accuracy(model: LatentVariableModel, train: ImageDataset, test: ImageDataset, k: int = 5) -> float:
    """k-NN class accuracy of the latent means: test images classified by their nearest training images in z."""
    if train.y is None or test.y is None:
        raise ValueError("k-NN accuracy needs labelled data")
    return knn_accuracy(encodings(model, train)[0], train.y, encodings(model, test)[0], test.y, k)


# -- maximum mean discrepancy ------------------------------------------------------------------------


def _flat(images: Data) -> torch.Tensor:
    x = images.x if isinstance(images, ImageDataset) else torch.as_tensor(images)
    return x.reshape(x.shape[0], -1).double()


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_points: int = 2000) -> float:
    """The median heuristic: the median distance between distinct points of the pooled sample."""
    pooled = torch.cat([x, y])[:max_points]
    distances = torch.pdist(pooled)
    return float(distances[distances > 0].median()) if (distances > 0).any() else 1.0


def _mmd2_from_kernel(kernel: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 from the pooled kernel matrix; ``first`` marks the rows of the first sample.
    ``first`` may be a batch of markings (P, N): one estimate per row."""
    a = first.double()
    b = 1 - a
    n, m = a.sum(-1), b.sum(-1)
    diagonal = kernel.diagonal()
    within_a = (a @ kernel * a).sum(-1) - (a * diagonal).sum(-1)
    within_b = (b @ kernel * b).sum(-1) - (b * diagonal).sum(-1)
    between = (a @ kernel * b).sum(-1)
    return within_a / (n * (n - 1)) + within_b / (m * (m - 1)) - 2 * between / (n * m)


def mmd(x: Data, y: Data, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy between two sets of images (flattened), with the kernel
    exp(-|a - b|^2 / (2 bandwidth^2)); ``bandwidth`` defaults to the median heuristic. Near 0 when
    both come from one distribution (it can dip below 0), larger the more they differ."""
    return mmd_test(x, y, bandwidth=bandwidth, permutations=0).mmd2


@dataclass
class MMDTest:
    """The squared MMD, the kernel bandwidth, and the permutation test's p-value (None without permutations)."""

    mmd2: float
    bandwidth: float
    p_value: float | None
    permutations: int


def mmd_test(x: Data, y: Data, bandwidth: float | None = None, permutations: int = 200, seed: int = 0) -> MMDTest:
    """MMD^2 between ``x`` and ``y`` and a permutation test of "same distribution": the share of random
    relabellings of the pooled images whose MMD^2 is at least the observed one (Gretton et al., 2012)."""
    a, b = _flat(x), _flat(y)
    if a.shape[0] < 2 or b.shape[0] < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"MMD needs two sets of at least 2 images of one size, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    bandwidth = bandwidth or median_bandwidth(a, b)
    pooled = torch.cat([a, b])
    kernel = torch.exp(-torch.cdist(pooled, pooled).square() / (2 * bandwidth**2))
    first = torch.zeros(pooled.shape[0])
    first[: a.shape[0]] = 1
    observed = float(_mmd2_from_kernel(kernel, first))
    p_value = None
    if permutations:
        g = torch.Generator().manual_seed(seed)
        shuffled = torch.stack([first[torch.randperm(first.shape[0], generator=g)] for _ in range(permutations)])
        null = torch.cat([_mmd2_from_kernel(kernel, part) for part in shuffled.split(50)])
        p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return MMDTest(observed, bandwidth, p_value, permutations)


def nearest_distance(images: Data, reference: Data, batch_size: int = 250) -> torch.Tensor:
    """Euclidean pixel distance from each image to its nearest neighbour in ``reference`` (N,).

    A check on samples that a kernel MMD can miss: speckled samples sit far from every real image, while
    held-out real images give the distance a good sample should have. Images are clipped to [0, 1] first.
    """
    a, ref = _flat(images).clamp(0, 1), _flat(reference)
    if a.shape[0] == 0 or ref.shape[0] == 0 or a.shape[1] != ref.shape[1]:
        raise ValueError(
            f"nearest_distance needs images and a reference of one size, got {tuple(a.shape)} and {tuple(ref.shape)}"
        )
    return torch.cat([torch.cdist(part, ref).min(1).values for part in a.split(batch_size)])


# -- anomaly scores --------------------------------------------------------------------------------------


def anomaly_scores(
    model: LatentVariableModel,
    data: Data,
    y: torch.Tensor | None = None,
    method: str = "elbo",
    num_samples: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """Per-image log-likelihood scores (nats; low means unusual): the ``"elbo"``, or ``"log_px"``
    (importance-sampled with ``num_samples``). Likelihood tracks image complexity as much as novelty:
    simple images score high whatever they show."""
    if method == "elbo":
        return model.elbo_terms(data, y, seed=seed)["elbo"]
    if method == "log_px":
        return model.log_evidence(data, num_samples, y, seed=seed, progress=False)
    raise ValueError(f"method must be 'elbo' or 'log_px', got {method!r}")


def auroc(normal_scores: torch.Tensor, anomalous_scores: torch.Tensor) -> float:
    """Area under the ROC curve of "the score is lower for anomalies": the probability that a random
    anomalous image scores below a random normal one (ties count half). 0.5 is chance, 1 perfect."""
    normal, anomalous = (
        torch.as_tensor(normal_scores).double().flatten(),
        torch.as_tensor(anomalous_scores).double().flatten(),
    )
    if normal.numel() == 0 or anomalous.numel() == 0:
        raise ValueError("AUROC needs at least one score of each kind")
    pooled = torch.cat([normal, anomalous])
    ranks = _average_ranks(pooled)
    normal_rank_sum = ranks[: normal.numel()].sum()
    u = normal_rank_sum - normal.numel() * (normal.numel() + 1) / 2  # Mann-Whitney U of normal above anomalous
    return float(u / (normal.numel() * anomalous.numel()))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 1, ties sharing their average rank."""
    order = values.argsort()
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, values.numel() + 1, dtype=values.dtype)
    unique, inverse = torch.unique(sorted_values, return_inverse=True)
    if unique.numel() < values.numel():  # average the ranks within each tie
        sums = torch.zeros(unique.numel(), dtype=values.dtype).index_add_(0, inverse, ranks[order])
        counts = torch.zeros(unique.numel(), dtype=values.dtype).index_add_(0, inverse, torch.ones_like(values))
        ranks[order] = (sums / counts)[inverse]
    return ranks


# -- two dimensions for a figure ----------------------------------------------------------------------------

PROJECTIONS = ("pca", "tsne")


def project(
    codes: torch.Tensor, method: str | tuple[int, int] = "pca", seed: int = 0
) -> tuple[torch.Tensor, tuple[str, str]]:
    """Codes (N, z_dim) as points (N, 2) and the axes' names: as they are for z_dim <= 2, a chosen pair of
    dimensions ``(i, j)``, the top two principal components (``"pca"``) or scikit-learn's t-SNE (``"tsne"``)."""
    codes = codes.detach().cpu().double()
    if codes.shape[1] == 1:  # one dimension: along a line
        return torch.cat([codes, torch.zeros_like(codes)], 1), ("z1", "")
    if codes.shape[1] == 2 and not isinstance(method, tuple):
        return codes, ("z1", "z2")
    if isinstance(method, tuple):
        i, j = method
        if not (0 <= i < codes.shape[1] and 0 <= j < codes.shape[1]):
            raise ValueError(f"dimensions {method} outside 0..{codes.shape[1] - 1}")
        return codes[:, [i, j]], (f"z{i + 1}", f"z{j + 1}")
    if method == "pca":
        centred = codes - codes.mean(0)
        _, _, vt = torch.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, ("principal component 1", "principal component 2")
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ValueError("t-SNE needs scikit-learn: pip install 'ppvae[tsne]', or use method='pca'") from None
        points = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(codes.numpy())
        return torch.as_tensor(points), ("t-SNE 1", "t-SNE 2")
    raise ValueError(f"method must be one of {PROJECTIONS} or a pair of dimensions, got {method!r}")


# -- walks through the latent space: tensors of images for the classic figures ---------------------------


def _condition_labels(model: LatentVariableModel, y, n: int) -> torch.Tensor | None:
    """``n`` copies of one label (or None) for a conditional model's decoder."""
    if not _takes_labels(model):
        if y is not None:
            raise ValueError(f"{type(model).__name__} is not conditional: it takes no label")
        return None
    if y is None:
        raise ValueError(f"{type(model).__name__} decodes with a label: pass y (a class index or name)")
    return model.sample_labels(n, y)


def _site_size(model: LatentVariableModel, site: str | None) -> int:
    """The size of the latent ``site`` (None: the one next to x), or an error naming the sites there are."""
    return model.latent_sizes[model.latent_site(site)]


def _grid_values(
    model: LatentVariableModel,
    dims: tuple[int, int],
    steps: int,
    data: Data | None,
    y,
    tail: float,
    site: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Values along each of two latent dimensions: the prior's quantiles from ``tail`` to 1 - ``tail``, or,
    for a prior without a quantile function (mixture, VampPrior, Student-t, a flow) and for a layer of a
    hierarchy below the top (whose prior is conditional), the same quantiles of the latent means of ``data``
    (the aggregate posterior)."""
    q = torch.linspace(tail, 1 - tail, steps, dtype=torch.float64)
    labels = _condition_labels(model, y, 1)
    prior = model.prior(model.condition(None, None if labels is None else labels.to(model.device)))
    size = _site_size(model, site)
    base = getattr(prior, "base_dist", None)
    top = model.latent_site(site) == list(model.latent_sizes)[-1]
    try:
        if base is None or not top:
            raise NotImplementedError
        values = [
            base.icdf(q.to(model.device, torch.float32)[:, None].expand(steps, size))[:, d].reshape(-1) for d in dims
        ]
        return values[0].cpu(), values[1].cpu(), "the prior's quantiles"
    except NotImplementedError:
        if data is None:
            what = f"the {type(prior).__name__} prior" if top else f"the layer {site} (below the top)"
            raise ValueError(f"{what} has no quantile function: pass data to span the latent means instead") from None
    labelled = y if _takes_labels(model) and isinstance(y, torch.Tensor) else None
    means = encodings(model, data, labelled, site=site)[0].double()
    return (
        torch.quantile(means[:, dims[0]], q).float(),
        torch.quantile(means[:, dims[1]], q).float(),
        "quantiles of the data's latent means",
    )


@torch.no_grad()
def manifold(
    model: LatentVariableModel,
    steps: int = 15,
    dims: tuple[int, int] = (0, 1),
    data: Data | None = None,
    y=None,
    tail: float = 0.05,
    site: str | None = None,
) -> tuple[torch.Tensor, str]:
    """The decoded latent plane (Kingma & Welling's figure): images (steps, steps, C, H, W) on a grid over
    dimensions ``dims`` (the others at 0), spaced by the prior's quantiles (or the data's, see above);
    row i has the second dimension at its i-th value from the top. Also says which spacing it used.
    ``site``: the layer of a hierarchy to span (default: the one next to x)."""
    size = _site_size(model, site)
    _check_dims(size, dims)
    first, second, spacing = _grid_values(model, dims, steps, data, y, tail, site)
    z = torch.zeros(steps, steps, size)
    z[:, :, dims[0]] = first[None, :]
    z[:, :, dims[1]] = second.flip(0)[:, None]
    images = model.decode(z.reshape(-1, size), _condition_labels(model, y, steps * steps), site=site)
    return images.reshape(steps, steps, *model.x_shape).cpu(), spacing


def _check_dims(size: int, dims) -> None:
    if any(not 0 <= d < size for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"latent dimensions must be distinct and in 0..{size - 1}, got {tuple(dims)}")


@torch.no_grad()
def traverse(
    model: LatentVariableModel,
    dims: Sequence[int] | None = None,
    steps: int = 9,
    span: float = 2.5,
    start: torch.Tensor | None = None,
    y=None,
    site: str | None = None,
) -> torch.Tensor:
    """One row per latent dimension in ``dims`` (default: all), that dimension swept over [-span, span]
    around ``start`` (a code, default 0) with the others held: (len(dims), steps, C, H, W). ``site``: the
    layer of a hierarchy to sweep (default: the one next to x)."""
    size = _site_size(model, site)
    dims = list(range(size)) if dims is None else list(dims)
    _check_dims(size, dims)
    start = torch.zeros(size) if start is None else torch.as_tensor(start, dtype=torch.float32).cpu().reshape(-1)
    offsets = torch.linspace(-span, span, steps)
    z = start.repeat(len(dims), steps, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = start[d] + offsets
    images = model.decode(z.reshape(-1, size), _condition_labels(model, y, len(dims) * steps), site=site)
    return images.reshape(len(dims), steps, *model.x_shape).cpu()


@torch.no_grad()
def interpolate(
    model: LatentVariableModel, a: torch.Tensor, b: torch.Tensor, steps: int = 10, y=None, site: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """From image ``a`` to image ``b`` in ``steps``: decoded along the line between their latent means (of the
    layer ``site`` of a hierarchy; default the one next to x), and blended in pixel space, each (steps, C, H, W).
    The first passes through plausible images; the second fades one image into the other."""
    pair = torch.stack([torch.as_tensor(a).reshape(model.x_shape), torch.as_tensor(b).reshape(model.x_shape)]).float()
    codes = model.encode(pair, _condition_labels(model, y, 2), site=site).cpu()
    t = torch.linspace(0, 1, steps)[:, None]
    latent_path = model.decode((1 - t) * codes[0] + t * codes[1], _condition_labels(model, y, steps), site=site)
    pixel_path = (1 - t[:, :, None, None]) * pair[0] + t[:, :, None, None] * pair[1]
    return latent_path.cpu(), pixel_path


def class_index(data: ImageDataset, label: int | str) -> int:
    """A class of ``data`` as an index: an index, or one of its class names (case and spaces ignored)."""
    return label_index(label, data.num_classes, data.classes)


@torch.no_grad()
def attribute(
    model: LatentVariableModel,
    data: ImageDataset,
    source: int | str,
    target: int | str,
    images: torch.Tensor,
    strengths: Sequence[float] = (0.0, 0.5, 1.0, 1.5),
) -> torch.Tensor:
    """Attribute vectors (the lecture's "add glasses"): the mean latent of class ``target`` minus that of
    class ``source``, added with each of ``strengths`` to the codes of ``images``: (N, len(strengths), C, H, W).
    Boot minus sneaker, added to sneakers, turns them into boots."""
    if _takes_labels(model):
        raise ValueError("attribute vectors move an image's class through z; a conditional model takes the class as y")
    if data.y is None:
        raise ValueError("attribute vectors need labelled data")
    means = encodings(model, data)[0]
    s, t = class_index(data, source), class_index(data, target)
    if not (data.y == s).any() or not (data.y == t).any():
        raise ValueError(f"the data holds no image of class {s if not (data.y == s).any() else t}")
    vector = means[data.y == t].mean(0) - means[data.y == s].mean(0)
    codes = model.encode(images, _condition_labels(model, None, len(images))).cpu()
    moved = torch.stack([codes + w * vector for w in strengths], 1)
    return model.decode(moved.reshape(-1, model.z_dim)).reshape(len(images), len(strengths), *model.x_shape).cpu()


@torch.no_grad()
def uncertainty(
    model: LatentVariableModel, images: torch.Tensor, draws: int = 32, y: torch.Tensor | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How sure the encoder is: the posterior scales (N, z_dim), and the mean and pixel-wise standard
    deviation of images decoded from ``draws`` samples of q(z | x), each (N, C, H, W). ``y``: the images'
    labels, for a conditional model."""
    labels = None if not _takes_labels(model) else torch.as_tensor(_condition_labels(model, y, len(images)))
    loc, scale = model.encode(images, labels, return_scale=True)
    g = torch.Generator(device=loc.device).manual_seed(seed)
    z = loc + scale * torch.randn((draws, *loc.shape), generator=g, device=loc.device)
    decoded = model.decode(z.reshape(-1, model.z_dim), None if labels is None else labels.repeat(draws))
    decoded = decoded.reshape(draws, len(images), *model.x_shape)
    return scale.cpu(), decoded.mean(0).cpu(), decoded.std(0).cpu()
