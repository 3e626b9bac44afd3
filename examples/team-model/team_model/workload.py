"""The ``team-mlp`` workload: a BatchNorm MLP on scikit-learn's breast cancer data set.

It stands for a team's own training code. The contract with adamp-tune is small: a function
``train(ctx)`` that builds its optimizer with ``ctx.build_optimizer(...)``, calls
``ctx.report(value, step)`` after each epoch and returns the final value, wrapped in a
``Workload`` that names it, its metric and direction, its own arguments and default search
spaces. Everything it imports from adamp-tune comes from the ``workers`` package's top level.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.nn import functional as F

from workers import ParamSpec, SearchRange, TrialContext, Workload

VALIDATION_FRACTION = 0.25


@lru_cache(maxsize=1)
def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """569 tumours, 30 features each (bundled with scikit-learn: nothing is downloaded).

    A fixed split, so that every trial is judged on the same patients; features are
    standardised with the training part's statistics.
    """
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    n_val = int(len(y) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    x = (x - mean) / std
    return (
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]),
        torch.from_numpy(x[val]),
        torch.from_numpy(y[val]),
    )


def build_model(hidden: int, features: int = 30) -> nn.Module:
    """Two Linear-BatchNorm-ReLU blocks (scale-invariant weights) and a linear head."""
    return nn.Sequential(
        nn.Linear(features, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2),
    )


@torch.no_grad()
def validation_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float(F.cross_entropy(model(x), y).item())


def train(ctx: TrialContext) -> float:
    """Train for ``epochs`` epochs; report the validation log-loss after each."""
    x_train, y_train, x_val, y_val = (t.to(ctx.device) for t in dataset())
    model = build_model(ctx.args["hidden"]).to(ctx.device)
    optimizer = ctx.build_optimizer(model.parameters())  # AdamP, SGDP, AdamW or SGD
    batch_size: int = ctx.args["batch_size"]
    shuffle = torch.Generator().manual_seed(ctx.seed)  # the trial's seed: reproducible
    loss = float("inf")
    for epoch in range(ctx.args["epochs"]):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle).to(ctx.device)
        for start in range(0, len(order) - 1, batch_size):  # BatchNorm: 2 samples at least
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        loss = validation_loss(model, x_val, y_val)
        ctx.report(loss, epoch)  # raises TrialStopped when the pruner stops the trial
    return loss


_ADAM = {
    "lr": SearchRange(1e-4, 1e-1, log=True),
    "weight_decay": SearchRange(1e-6, 1e-1, log=True),
}
_SGD = {
    "lr": SearchRange(1e-3, 1.0, log=True),
    "weight_decay": SearchRange(1e-6, 1e-2, log=True),
}
_PROJECTION = {"delta": SearchRange(0.01, 1.0, log=True), "wd_ratio": SearchRange(0.0, 1.0)}

WORKLOAD = Workload(
    name="team-mlp",
    train=train,
    metric="val_log_loss",
    direction="minimize",
    description=(
        "Example plug-in (examples/team-model): BatchNorm MLP on scikit-learn's breast cancer "
        "data (427 train / 142 validation tumours); reports the validation log-loss per epoch."
    ),
    args={
        "epochs": ParamSpec("int", 30, "training epochs", low=1, high=1000),
        "batch_size": ParamSpec("int", 32, "mini-batch size", low=2, high=427),
        "hidden": ParamSpec("int", 64, "width of the hidden layers", low=2, high=4096),
    },
    default_space={
        "adamp": {**_ADAM, **_PROJECTION},
        "sgdp": {**_SGD, **_PROJECTION},
        "adamw": _ADAM,
        "sgd": _SGD,
    },
)
