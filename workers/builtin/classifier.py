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
        ctx.report(last, epoch)
        ctx.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "shuffle": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(),
                "last": last,
            }
        )
    return last
