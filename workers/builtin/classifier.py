"""The training loop the built-in image and signal classifiers share.

Mini-batches drawn in the trial's seeded order, cross-entropy, the trial's optimizer with
an optional cosine schedule over all steps, and the validation accuracy reported after each
epoch (so the pruner can stop the trial early). After each report the model, optimizer,
schedule and shuffling state are checkpointed, so a re-run trial continues with the next
epoch and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from workers.context import TrialContext

MAX_NORMS = 501
"""Norms kept per trial (the start and 500 epochs, the most a built-in trains)."""


SCALE_INVARIANT = (nn.Conv1d, nn.Conv2d)
"""The built-in classifiers put a BatchNorm after every convolution: the loss ignores the
scale of those weights, the case AdamP and SGDP exist for."""


@torch.no_grad()
def weight_norm(model: nn.Module) -> float:
    """L2 norm of the scale-invariant weights (every convolution's), as the paper plots it."""
    total = sum(
        float((m.weight.detach().double() ** 2).sum().item())
        for m in model.modules()
        if isinstance(m, SCALE_INVARIANT)
    )
    return float(total**0.5)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``inputs`` the model labels right (in eval mode)."""
    model.eval()
    correct = (model(inputs).argmax(dim=1) == labels).sum()
    return float(correct.item()) / len(labels)


def train_classifier(
    ctx: TrialContext,
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    min_batch: int = 1,
) -> float:
    """Train ``model`` on ``data`` (train inputs, labels, validation inputs, labels) for
    ``ctx.args["epochs"]`` epochs of ``ctx.args["batch_size"]``; returns the last
    validation accuracy. Batches smaller than ``min_batch`` are skipped (a 1-D BatchNorm
    cannot normalise one sample)."""
    epochs: int = ctx.args["epochs"]
    batch_size: int = ctx.args["batch_size"]
    x_train, y_train, x_val, y_val = (t.to(ctx.device) for t in data)
    model = model.to(ctx.device)
    optimizer = ctx.build_optimizer(model.parameters())
    steps_per_epoch = -(-len(y_train) // batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if ctx.args["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch
        )
    shuffle = torch.Generator().manual_seed(ctx.seed)
    norms = [weight_norm(model)]  # at start, then after each epoch (the paper's figure)
    last = 0.0
    saved = ctx.load_checkpoint()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        last = float(saved["last"])
        norms = [float(n) for n in saved.get("norms", norms)]
    for epoch in range(ctx.last_step + 1, epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle).to(ctx.device)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < min_batch:
                continue
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        last = accuracy(model, x_val, y_val)
        norms.append(weight_norm(model))
        ctx.set_user_attr("weight_norms", [round(n, 6) for n in norms[-MAX_NORMS:]])
        ctx.report(last, epoch)
        ctx.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "shuffle": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(),
                "last": last,
                "norms": norms,
            }
        )
    return last
