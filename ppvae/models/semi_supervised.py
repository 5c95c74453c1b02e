"""The semi-supervised VAE, M2 of Kingma, Rezende, Mohamed & Welling (2014): the label is a latent variable.

    model:  y ~ Cat(1/K),  z ~ p(z),  x ~ p(x | z, y)         y observed where its label is known
    guide:  y ~ q(y | x),  z ~ q(z | x, y)                     q(y | x) is the classifier

One program serves labelled and unlabelled images in the same batch: the label site is
observed where the label is known and latent where it is not (Pyro's ``obs_mask``), and
the guide's q(y | x) is enumerated over the K classes where it is latent, so that
``TraceEnum_ELBO`` sums the unlabelled bound over y exactly instead of drawing y:

    labelled:    log p(x, y) >= E_q(z|x,y)[log p(x | z, y)] + log p(y) - KL(q(z | x, y) || p(z))
    unlabelled:  log p(x)    >= sum_y q(y | x) [labelled bound at y] + H(q(y | x))

q(y | x) appears only in the unlabelled bound, so by itself it never learns from a label. Kingma
et al. add the classifier's log-likelihood on the labelled images, weighted by alpha: in training
the model observes each known label once more, as ``y_classified ~ q(y | x)``, scaled by
``classifier_weight`` (a program argument that fitting hands over; evaluation, sampling and the
evidence never see it). q(z | x, y) and p(x | z, y) are the CVAE's parts, with the label's one-hot
vector as their condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F

from ppvae.data import Data
from ppvae.estimator import Capabilities
from ppvae.estimator.contract import MISSING, check_labels
from ppvae.models.cvae import CVAE
from ppvae.models.declared import described
from ppvae.parts import NETWORKS, normalize_spec
from ppvae.parts.registry import PartSpec


class SemiSupervisedVAE(CVAE):
    """M2 on ``num_classes`` labels, of which any share may be missing: ``fit(data, labelled=100)`` keeps 100
    labels (10 per class, drawn with the fit's seed) and learns from every image; -1 marks an unknown label
    in labels given as they are. A ``validation`` set (a fraction, held out before labels are hidden, or a
    labelled dataset) keeps its labels and chooses the epoch by accuracy, as the literature's M2 results do:
    leave it out to use no more labels than ``labelled``.

    ``predict``, ``predict_proba`` and ``score`` (accuracy) classify with q(y | x); ``sample(n, y=3)`` and
    the CVAE's figures generate by class; ``log_evidence(x)`` is log p(x), the label summed out exactly, and
    ``log_evidence(x, y=...)`` is log p(x, y). Scoring a labelled test set reads no labels unless ``y=`` gives
    them, so its ELBO and log p(x) compare with any VAE's; ``evaluate`` adds the accuracy where labels are known.

    ``classifier_weight`` is alpha, the weight of the classifier's log-likelihood on each labelled image
    (0 leaves it out: M2 as a pure generative model, whose q(y | x) learns only through the unlabelled bound;
    on Fashion-MNIST with 100 to 3,000 labels that cost 0.014 to 0.055 of test accuracy on average over three
    seeds, and some accuracy on every seed, so it is on by default).
    ``enumerate_labels=False`` draws y from q(y | x) instead of summing over it (a score-function gradient):
    what enumeration buys. ``classifier_network`` is q(y | x)'s network (a network part: a name or a dict), by
    default the model's ``network``. The other arguments are the CVAE's.

    ``beta`` is 3 by default, not the bound's 1: with beta 1 the decoder learned to ignore y (z carried the
    whole image, class included), so the unlabelled images taught q(y | x) nothing. Dearer information in z,
    and the labelled images repeated to half of each epoch (``fit``'s ``labelled_share="auto"``), make y the
    class: with 100 Fashion-MNIST labels, test accuracy 0.577 with neither, 0.659 with both
    (``python benchmarks/m2_settings.py``; docs/results.md).

        SemiSupervisedVAE(x_shape=(1, 28, 28), num_classes=10, z_dim=50)
    """

    capabilities = Capabilities(condition="labels", latent_labels=True, selected_by="accuracy")
    aliases = ("m2",)
    lowered_elbo = None  # its label is summed out (TraceEnum_ELBO): the Pyro programs are the step
    lowered_log_joint = lowered_log_guide = None  # its own programs (the label's site): AIS traces them

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        z_dim: int | Sequence[int] = 50,
        prior: PartSpec = "normal",
        likelihood: PartSpec = "bernoulli",
        guide: PartSpec = "normal",
        network: PartSpec = "mlp",
        beta: float = 3.0,
        classes: Sequence[str] | None = None,
        layer_hidden: Sequence[int] = (256,),
        classifier_weight: float = 50.0,
        enumerate_labels: bool = True,
        classifier_network: PartSpec | None = None,
    ):
        super().__init__(x_shape, num_classes, z_dim, prior, likelihood, guide, network, beta, classes, layer_hidden)
        weight = classifier_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise ValueError(f"classifier_weight must be a finite number >= 0 (alpha), got {weight!r}")
        if not isinstance(enumerate_labels, bool):
            raise ValueError(f"enumerate_labels is True or False, got {enumerate_labels!r}")
        self.classifier_weight = float(weight)
        self.enumerate_labels = enumerate_labels
        self.classifier_network = normalize_spec(
            self.specs["network"] if classifier_network is None else classifier_network, "network"
        )
        self.classifier = NETWORKS.build(
            self.classifier_network, x_shape=self.x_shape, z_dim=self.z_dim, encoder_out=self.num_classes, decoder_out=0
        )
        self._pyro_parts["classify"] = self._with_parameters(classifier=self.classifier)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "classifier_weight": self.classifier_weight,
            "enumerate_labels": self.enumerate_labels,
            "classifier_network": self.classifier_network,
        }

    @property
    def training_arguments(self) -> dict[str, Any]:
        return {"classifier_weight": self.classifier_weight}

    def condition(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool = False) -> torch.Tensor:
        """The known labels as one-hot vectors, a row of zeros where the label is unknown (-1)."""
        if y is None:
            raise ValueError("the condition hook takes labels y (-1 where unknown)")
        y = torch.as_tensor(y, device=self.device).long()
        return F.one_hot(y.clamp(min=0), self.num_classes).float() * (y >= 0)[:, None]

    @staticmethod
    def known_labels(c: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(which labels c gives, the labels, 0 where unknown), each (n,), from the condition."""
        if c is None:
            return torch.zeros(n, dtype=torch.bool, device=device), torch.zeros(n, dtype=torch.long, device=device)
        return c.sum(-1) > 0, c.argmax(-1)

    # -- the Pyro programs ----------------------------------------------------------------------------

    def model(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
        classifier_weight: float = 0.0,
    ):
        """y ~ Cat(1/K), observed where c gives it; then the VAE's model with y's one-hot vector as condition.

        In training (``classifier_weight`` > 0) each known label is observed once more under q(y | x), the
        classifier's term of Kingma et al.'s objective."""
        n = x.shape[0] if x is not None else size if size is not None else c.shape[0]
        known, labels = self.known_labels(c, n, self.device)
        every, some = bool(known.all()), bool(known.any())  # which of the three forms the label site takes
        with pyro.plate("data", n):
            prior = dist.Categorical(logits=torch.zeros(n, self.num_classes, device=self.device))
            if every:
                y = pyro.sample("y", prior, obs=labels)
            elif not some:
                y = pyro.sample("y", prior)
            else:
                y = pyro.sample("y", prior, obs=labels, obs_mask=known)
            if classifier_weight and x is not None and some:
                self._register("classify")
                with poutine.scale(scale=classifier_weight), poutine.mask(mask=known):
                    pyro.sample("y_classified", self.label_posterior(x), obs=labels)
            return self.model_sites(x, F.one_hot(y, self.num_classes).float(), kl_weight)

    def guide(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        size: int | None = None,
        classifier_weight: float = 0.0,
    ):
        """y ~ q(y | x) where c does not give it (enumerated over the classes in training), then q(z | x, y)."""
        n = x.shape[0]
        known, labels = self.known_labels(c, n, x.device)
        every, some = bool(known.all()), bool(known.any())
        with pyro.plate("data", n):
            y = labels
            if not every:
                self._register("classify")
                infer = {"enumerate": "parallel"} if self.enumerate_labels else {}
                with poutine.mask(mask=~known) if some else nullcontext():
                    guessed = pyro.sample("y_unobserved" if some else "y", self.label_posterior(x), infer=infer)
                y = torch.where(known, labels, guessed)
            return self.guide_sites(x, F.one_hot(y, self.num_classes).float(), kl_weight)

    def label_posterior(self, x: torch.Tensor) -> dist.Categorical:
        """q(y | x), the classifier, for images (N, C, H, W)."""
        return dist.Categorical(logits=self.classifier.encoder(x.reshape((x.shape[0],) + self.x_shape)))

    # -- classification ---------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_proba(self, data: Data, binarize: str | None = "auto", seed: int = 0) -> torch.Tensor:
        """q(y | x) for each image, (N, num_classes), the images seen as ``prepare`` sees them."""
        self.eval()
        x = self.prepare(data, binarize, seed)
        return torch.cat([self.label_posterior(x[i : i + 1000]).probs for i in range(0, len(x), 1000)])

    def predict(self, data: Data, binarize: str | None = "auto", seed: int = 0) -> torch.Tensor:
        """The most probable class under q(y | x) for each image, (N,)."""
        return self.predict_proba(data, binarize, seed).argmax(-1)

    def score(self, data: Data, y: Any = None, binarize: str | None = "auto", seed: int = 0) -> float:
        """Accuracy of ``predict`` against labels ``y`` (or the dataset's), scikit-learn's ``score``."""
        labels = y if y is not None else getattr(data, "y", None)
        if labels is None:
            raise ValueError("score compares predictions with labels: pass y= or a dataset that has them")
        labels = check_labels(labels, self.num_classes).to(self.device)
        return (self.predict(data, binarize, seed) == labels).double().mean().item()

    def evaluate(
        self, data: Data, y: Any = None, c: torch.Tensor | None = None, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """The images scored as images (ELBO and log p(x) with the label summed out, comparable with any VAE's)
        and, where labels are known (``y``, the condition ``c``, or the dataset's), the ``accuracy`` of q(y | x)."""
        if c is not None:
            known, labels = self.known_labels(torch.as_tensor(c).to(self.device), len(c), self.device)
            labels = torch.where(known, labels, MISSING)
        else:
            labels = y if y is not None else getattr(data, "y", None)
            labels = None if labels is None else check_labels(labels, self.num_classes, missing=True)
        out = super().evaluate(self.images(data), None, None, *args, **kwargs)
        if labels is not None and bool((labels >= 0).any()):
            known = labels >= 0
            binarize, seed = kwargs.get("binarize", "auto"), kwargs.get("seed", 0)
            right = (self.predict(data, binarize, seed).cpu() == labels.cpu())[known.cpu()].double()
            out["accuracy"] = right.mean().item()
            out["accuracy_se"] = (right.std() / math.sqrt(len(right))).item() if len(right) > 1 else float("nan")
        return out

    def __repr__(self) -> str:
        alpha = f", classifier_weight={self.classifier_weight:g}"
        enumerated = "" if self.enumerate_labels else ", enumerate_labels=False"
        own = self.classifier_network
        network = "" if own == self.specs["network"] else f", classifier_network={described(own)}"
        return super().__repr__()[:-1] + alpha + enumerated + network + ")"
