"""The paper's learning-rate schedule: linear warm-up, then cosine decay to zero at ``nepoch``."""

from __future__ import annotations

import math


def learning_rate(epoch: int, *, base_lr: float, warmup_epochs: int, nepoch: int) -> float:
    """``lr * epoch / warmup`` during warm-up, then ``lr * 0.5 * (1 + cos(pi * (epoch - w) / (nepoch - w)))``.

    >>> learning_rate(40, base_lr=1e-3, warmup_epochs=40, nepoch=1000)
    0.001
    """
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (nepoch - warmup_epochs)))
