"""torch.compile beyond the loss contract (tests/test_loss_contract.py): inductor, and recompiles."""

import pytest
import torch

from longtail import ClassBalancedLoss, FocalLoss, LDAMLoss, LogitAdjustedLoss, SigmoidFocalLoss


@pytest.mark.slow
def test_inductor_compiled_value_and_gradient_match_eager():
    torch._dynamo.reset()
    criterion = ClassBalancedLoss([100, 10, 1], beta=0.999, loss="focal", gamma=2.0)
    compiled = torch.compile(criterion, fullgraph=True)
    z, y = torch.randn(16, 3, requires_grad=True), torch.randint(0, 3, (16,))
    eager = criterion(z, y)
    (g_eager,) = torch.autograd.grad(eager, z)
    out = compiled(z, y)
    (g_compiled,) = torch.autograd.grad(out, z)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(g_compiled, g_eager)


@pytest.mark.slow
def test_recompiling_with_other_hyperparameters_keeps_a_full_graph():
    # On a second instance dynamo may treat a float hyperparameter as symbolic; checks must not break the graph.
    torch._dynamo.reset()
    z, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    for gamma in [1.0, 2.0, 3.5]:
        for criterion in [FocalLoss(gamma=gamma), SigmoidFocalLoss(gamma=gamma, alpha=gamma / 4),
                          ClassBalancedLoss([100, 10, 1], beta=0.999, loss="focal", gamma=gamma),
                          LDAMLoss([100, 10, 1], scale=10.0 * gamma), LogitAdjustedLoss([100, 10, 1], tau=gamma / 2)]:
            compiled = torch.compile(criterion, fullgraph=True, backend="eager")
            torch.testing.assert_close(compiled(z, y), criterion(z, y))


@pytest.mark.slow
def test_label_smoothing_sample_weight_and_pos_weight_compile_in_a_full_graph():
    # A new label_smoothing value on a new instance recompiles (dynamo may make it symbolic); no graph breaks.
    torch._dynamo.reset()
    z, y, s = torch.randn(8, 3), torch.randint(0, 3, (8,)), torch.rand(8)
    soft = torch.softmax(torch.randn(8, 3), 1)
    for eps in [0.1, 0.3]:
        for criterion, targets in [
            (ClassBalancedLoss([100, 10, 1], beta=0.999, loss="softmax_focal", gamma=1.0, label_smoothing=eps), (y, soft)),
            (LDAMLoss([100, 10, 1], scale=10.0, label_smoothing=eps), (y,)),
            (LogitAdjustedLoss([100, 10, 1], tau=0.5, label_smoothing=eps, reduction="weighted_mean"), (y, soft)),
            (ClassBalancedLoss([100, 10, 1], beta=0.999, loss="focal", gamma=2.0, pos_weight=[10 * eps, 1.0, 2.0]),
             (y, (soft > 0.3).float())),
        ]:
            compiled = torch.compile(criterion, fullgraph=True, backend="eager")
            for target in targets:
                zz = z.clone().requires_grad_(True)
                out = compiled(zz, target, s)
                (grad,) = torch.autograd.grad(out, zz)
                zz = z.clone().requires_grad_(True)
                expected = criterion(zz, target, s)
                (expected_grad,) = torch.autograd.grad(expected, zz)
                torch.testing.assert_close(out, expected)
                torch.testing.assert_close(grad, expected_grad)
