"""The parts: each builds from a name or a dict and returns the distribution it promises."""

import pyro.distributions as dist
import torch

from ppvae.parts import LIKELIHOODS


def test_bernoulli_log_prob_and_gradient_equal_pyros():
    logits = (torch.randn(3, 50, 1, 4, 4) * 8).requires_grad_()
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.3))
    ours = LIKELIHOODS.build("bernoulli", x_shape=(1, 4, 4))(logits.reshape(3, 50, 16))
    theirs = dist.Bernoulli(logits=logits).to_event(3)
    assert ours.batch_shape == theirs.batch_shape == (3, 50) and ours.event_shape == (1, 4, 4)
    ours_value, theirs_value = ours.log_prob(x), theirs.log_prob(x)
    assert torch.allclose(ours_value, theirs_value, atol=1e-5)
    (ours_grad,) = torch.autograd.grad(ours_value.sum(), logits)
    (theirs_grad,) = torch.autograd.grad(theirs_value.sum(), logits)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6)
    # far in the tails, where a naive log(sigmoid) would underflow to -inf
    extreme = torch.tensor([-200.0, 200.0])
    far = LIKELIHOODS.build("bernoulli", x_shape=(2,))(extreme).log_prob(torch.tensor([1.0, 0.0]))
    assert torch.isfinite(far) and far.item() == -400.0
