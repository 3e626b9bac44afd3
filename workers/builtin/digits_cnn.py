"""``digits-cnn``: a small BatchNorm CNN on scikit-learn's bundled 8x8 digits images.

Every convolution is followed by BatchNorm, which makes its weights scale-invariant: the case
AdamP and SGDP exist for. The data ship with scikit-learn (nothing is downloaded), a trial
takes seconds on a CPU, and it uses the GPU when the trial was given one. The metric is the
validation accuracy after each epoch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from workers.builtin.classifier import train_classifier
from workers.context import TrialContext
from workers.params import ParamSpec
from workers.registry import SearchRange, Workload, register

VALIDATION_FRACTION = 0.2
_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/validation split of the digits (fixed across trials so values compare)."""
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_val = int(len(labels) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return images[train], labels[train], images[val], labels[val]


def build_model(width: int) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head: 8x8 -> 4x4 -> global average."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(4 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 10),
    )


def train(ctx: TrialContext) -> float:
    """Train for ``epochs`` epochs, reporting validation accuracy after each."""
    return train_classifier(ctx, build_model(ctx.args["width"]), _dataset())


WORKLOAD = register(
    Workload(
        name="digits-cnn",
        checkpoints=True,
        train=train,
        metric="val_accuracy",
        direction="maximize",
        description=(
            "BatchNorm CNN on scikit-learn's 8x8 digits (1,438 train / 359 validation images); "
            "reports validation accuracy each epoch. Seconds per trial on a CPU."
        ),
        args={
            "epochs": ParamSpec("int", 8, "training epochs", low=1, high=200),
            "batch_size": ParamSpec("int", 64, "mini-batch size", low=1, high=1438),
            "width": ParamSpec("int", 16, "channels of the first convolution", low=1, high=256),
            "schedule": ParamSpec(
                "str", "cosine", "learning-rate schedule", choices=("cosine", "constant")
            ),
        },
        default_space={
            "adamp": {
                "lr": SearchRange(1e-4, 1e-1, log=True),
                "weight_decay": SearchRange(1e-6, 1e-1, log=True),
                "delta": SearchRange(0.01, 1.0, log=True),
                "wd_ratio": SearchRange(0.0, 1.0),
            },
            "sgdp": {
                "lr": SearchRange(1e-3, 1.0, log=True),
                "weight_decay": SearchRange(1e-6, 1e-2, log=True),
                "delta": SearchRange(0.01, 1.0, log=True),
                "wd_ratio": SearchRange(0.0, 1.0),
            },
            "adamw": {
                "lr": SearchRange(1e-4, 1e-1, log=True),
                "weight_decay": SearchRange(1e-6, 1e-1, log=True),
            },
            "sgd": {
                "lr": SearchRange(1e-3, 1.0, log=True),
                "weight_decay": SearchRange(1e-6, 1e-2, log=True),
            },
        },
    )
)
