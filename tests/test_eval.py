import pytest
import torch
import torch.nn as nn

from vitquant_core.eval import evaluate


class Fixed(nn.Module):
    """Returns preset logits: the input of each image is its row index."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def rows(*ranges):
    return [torch.arange(a, b, dtype=torch.float32)[:, None] for a, b in ranges]


def test_top1_top5_agreement():
    y = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 10)
    logits[0, 0] = 5  # right
    logits[1, 7] = 5  # wrong, label 1 second
    logits[1, 1] = 4
    logits[2, 9] = 5  # wrong, label 2 not in top-5
    logits[2, 2] = -1
    logits[3, 3] = 5  # right
    x1, x2 = rows((0, 2), (2, 4))
    loader = [(x1, y[:2]), (x2, y[2:])]
    r = evaluate(Fixed(logits), loader, progress=False)
    assert r.top1 == 50.0 and r.top5 == 75.0 and r.n == 4
    ref = torch.tensor([0, 7, 2, 2])
    r2 = evaluate(Fixed(logits), loader, reference=ref, progress=False, num_classes=10)
    assert r2.agreement == 50.0
    assert r2.per_class_top1[:4] == [100.0, 0.0, 0.0, 100.0] and r2.per_class_top1[4] is None


def test_nan_logits_raise():
    logits = torch.full((2, 3), float("nan"))
    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(Fixed(logits), [(rows((0, 2))[0], torch.tensor([0, 1]))], progress=False)


def test_reference_length_mismatch():
    logits = torch.eye(3)
    with pytest.raises(ValueError, match="same subset"):
        evaluate(Fixed(logits), [(rows((0, 3))[0], torch.arange(3))], reference=torch.arange(2), progress=False)
