"""Observations as data: validation names what is wrong; adjoint, diag(A A^T) and concatenation are exact."""

import pytest
import torch

from geodiff.errors import ObservationError
from geodiff.guidance.likelihood import GaussianLikelihood
from geodiff.operators import GridPointOperator, StackedOperator

from .conftest import H, W


def test_bad_inputs_raise_observation_error_naming_what_is_wrong(point_problem):
    y, op, e = point_problem.y, point_problem.operator, point_problem.error_std
    cases = [
        ((torch.full_like(y, float("nan")), op, e), "non-finite"),
        ((y, op, torch.zeros_like(e)), "error_std must be positive"),
        ((y, op, torch.full_like(e, float("inf"))), "error_std must be positive"),
        ((y[:5], lambda x: x.reshape(x.shape[0], -1)[:, :5], e), "6 values; expected 1 or 5"),
        ((y[:5], op, 0.1), "operator maps to 6"),
        ((y, "A", e), "callable"),
        ((y.reshape(1, 2, 3), op, e), r"\[N\] or \[B, N\]"),
        ((torch.zeros(0), op, e), r"\[N\] or \[B, N\]"),
    ]
    for arguments, message in cases:
        with pytest.raises(ObservationError, match=message):
            GaussianLikelihood(*arguments)


def test_defaults_and_dtypes():
    obs = GaussianLikelihood(torch.tensor([1, 2]), GridPointOperator(torch.tensor([0, 5]), (1, H, W)), 0.5)
    assert obs.y.dtype == torch.float64 and obs.error_std.tolist() == [0.5, 0.5] and obs.n_obs == 2
    like = torch.zeros(3, 1, H, W, dtype=torch.float32)
    assert obs.observed(like).shape == (3, 2) and obs.observed(like).dtype == torch.float32
    assert obs.variance(like).tolist() == [0.25, 0.25]
    per_member = GaussianLikelihood(torch.arange(6.0).reshape(3, 2), obs.operator, 0.5)
    assert torch.equal(per_member.observed(like), torch.arange(6.0).reshape(3, 2))


def test_plain_callable_adjoint_and_gram_equal_the_operator_s_own(point_problem):
    op = point_problem.operator
    own = GaussianLikelihood(point_problem.y, op, point_problem.error_std)
    plain = GaussianLikelihood(point_problem.y, lambda x: op(x), point_problem.error_std)
    r = torch.randn(2, 6, dtype=torch.float64)
    like = torch.zeros(2, 1, H, W, dtype=torch.float64)
    torch.testing.assert_close(plain.adjoint(r, like), own.adjoint(r, like))
    torch.testing.assert_close(plain.gram_diagonal(like), own.gram_diagonal(like))
    torch.testing.assert_close(own.adjoint(r, like).flatten(1), r @ point_problem.matrix)


def test_concatenation_stacks_operators_or_refuses(point_problem):
    a = GaussianLikelihood(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, H, W)), 0.1)
    b = GaussianLikelihood(torch.tensor([2.0, 3.0]), GridPointOperator(torch.tensor([4, 7]), (1, H, W)), 0.2)
    joint = GaussianLikelihood.concatenate([a, b])
    assert isinstance(joint.operator, StackedOperator) and joint.y.tolist() == [1.0, 2.0, 3.0]
    assert torch.allclose(joint.error_std, torch.tensor([0.1, 0.2, 0.2], dtype=torch.float64))
    plain = GaussianLikelihood(torch.tensor([1.0]), lambda x: x.reshape(x.shape[0], -1)[:, :1], 0.1)
    assert GaussianLikelihood.concatenate([a, plain]) is None
    per_member = GaussianLikelihood(torch.ones(2, 1), a.operator, 0.1)
    assert GaussianLikelihood.concatenate([a, per_member]) is None
