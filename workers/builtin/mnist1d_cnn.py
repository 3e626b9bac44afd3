"""``mnist1d-cnn``: a BatchNorm 1-D CNN on MNIST-1D, the built-in benchmark not at its ceiling.

MNIST-1D (Greydanus, 2020) is generated on the machine by the ``mnist1d`` package from its ten
1-D digit templates (``make_dataset``; its download path is never used). The published
reference accuracies are about 32% (logistic regression), 68% (MLP), 91% (GRU) and 94%
(CNN); this network is that CNN with BatchNorm after each convolution, which makes the
convolutions' weights scale-invariant, the case AdamP and SGDP exist for. With the default
budget a decent setting reaches CNN-level accuracy in seconds on a CPU, a few points short of
100%, so optimizers and their settings still differ.

The data are generated once per worker: kept in memory and in an ``.npz`` file under
``cache_dir()`` named by a hash of the generation arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import threading
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.builtin.classifier import train_classifier
from workers.context import TrialContext
from workers.params import ParamSpec
from workers.registry import SearchRange, Workload, register

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 5000
"""The published data set's size (``get_dataset_args()``): 4,000 train, 1,000 validation."""
DEFAULT_DATA_SEED = 42
"""The published data set's seed."""
_generating = threading.Lock()  # make_dataset seeds and draws from NumPy's global RNG


def cache_dir() -> Path:
    """Where generated data sets are kept: ``$ADAMP_TUNE_CACHE_DIR/mnist1d``.

    By default ``$XDG_CACHE_HOME/adamp-tune/mnist1d`` (``~/.cache/adamp-tune/mnist1d``): a
    place the worker's user can write on every node, with nothing shared between nodes.
    """
    base = os.environ.get("ADAMP_TUNE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "adamp-tune")
    return Path(base) / "mnist1d"


_MISSING = (
    "mnist1d-cnn needs the `mnist1d` package on this worker: "
    "pip install 'adamp-tune[service]' (or pip install mnist1d)"
)


def _mnist1d_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError as err:
        raise RuntimeError(_MISSING) from err


def _generation_args(num_samples: int, seed: int) -> dict[str, Any]:
    """``mnist1d.get_dataset_args()`` with our size and seed, and without its download URL."""
    try:
        from mnist1d.data import get_dataset_args  # noqa: PLC0415 - imports matplotlib: slow
    except ImportError as err:
        raise RuntimeError(_MISSING) from err
    args: dict[str, Any] = get_dataset_args(as_dict=True)
    args.pop("url", None)
    args.update(num_samples=num_samples, seed=seed)
    return args


def _cache_path(num_samples: int, seed: int) -> Path:
    # The other generation arguments are the package's defaults, fixed by its version: the key
    # names them through it, so that a cache hit need not import mnist1d (and matplotlib).
    key = {"mnist1d": _mnist1d_version(), "num_samples": num_samples, "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"mnist1d-{num_samples}-{seed}-{digest}.npz"


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset  # noqa: PLC0415
    from mnist1d.utils import ObjectView  # noqa: PLC0415

    args = _generation_args(num_samples, seed)
    with _generating:
        # make_dataset reseeds Python's and NumPy's global generators: put them back after.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            data = make_dataset(ObjectView(args))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    return {
        "x_train": data["x"].astype(np.float32),
        "y_train": data["y"].astype(np.int64),
        "x_val": data["x_test"].astype(np.float32),
        "y_val": data["y_test"].astype(np.int64),
    }


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The data set for these arguments: from the disk cache, else generated and cached."""
    path = _cache_path(num_samples, seed)
    try:
        with np.load(path) as npz:
            return {name: npz[name] for name in ("x_train", "y_train", "x_val", "y_val")}
    except FileNotFoundError:
        pass
    except Exception:  # a damaged file (disk full, killed writer): generate it again
        log.warning("ignoring unreadable MNIST-1D cache file %s", path, exc_info=True)
    arrays = _generate(num_samples, seed)
    try:
        _save(path, arrays)
    except OSError:  # a read-only home: the trial still runs, the next one generates again
        log.warning("cannot cache MNIST-1D under %s", path.parent, exc_info=True)
    return arrays


@lru_cache(maxsize=2)
def _dataset(
    num_samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/validation tensors (N, 1, 40), kept in memory for the worker's next trials."""
    a = load_arrays(num_samples, seed)
    return (
        torch.from_numpy(a["x_train"]).unsqueeze(1),
        torch.from_numpy(a["y_train"]),
        torch.from_numpy(a["x_val"]).unsqueeze(1),
        torch.from_numpy(a["y_val"]),
    )


def build_model(width: int) -> nn.Module:
    """Greydanus's MNIST-1D CNN with BatchNorm: three strided conv-BN-ReLU blocks, a linear head.

    A 40-sample signal becomes 20, 10, then 5 positions of ``width`` channels; the head sees
    where each feature lies, as in the reference CNN.
    """
    return nn.Sequential(
        nn.Conv1d(1, width, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * width, 10),
    )


def train(ctx: TrialContext) -> float:
    """Train for ``epochs`` epochs, reporting validation accuracy after each (a last batch
    of one sample is dropped: BatchNorm cannot normalise it)."""
    data = _dataset(ctx.args["num_samples"], ctx.args["data_seed"])
    return train_classifier(ctx, build_model(ctx.args["width"]), data, min_batch=2)


_ADAM_SPACE = {
    "lr": SearchRange(1e-4, 1e-1, log=True),
    "weight_decay": SearchRange(1e-6, 1e-1, log=True),
}
_SGD_SPACE = {
    "lr": SearchRange(1e-3, 1.0, log=True),
    "weight_decay": SearchRange(1e-6, 1e-2, log=True),
}
_PROJECTION_SPACE = {
    "delta": SearchRange(0.01, 1.0, log=True),
    "wd_ratio": SearchRange(0.0, 1.0),
}

WORKLOAD = register(
    Workload(
        name="mnist1d-cnn",
        checkpoints=True,
        train=train,
        metric="val_accuracy",
        direction="maximize",
        description=(
            "BatchNorm 1-D CNN on MNIST-1D, generated locally by the mnist1d package "
            "(4,000 train / 1,000 validation signals by default); reports validation accuracy "
            "each epoch. Published references: MLP 68%, CNN 94%. Seconds per trial on a "
            "CPU core."
        ),
        args={
            "epochs": ParamSpec("int", 20, "training epochs", low=1, high=500),
            "batch_size": ParamSpec("int", 64, "mini-batch size", low=2, high=100_000),
            "width": ParamSpec("int", 32, "channels of every convolution", low=1, high=512),
            "schedule": ParamSpec(
                "str", "cosine", "learning-rate schedule", choices=("cosine", "constant")
            ),
            "num_samples": ParamSpec(
                "int",
                DEFAULT_SAMPLES,
                "signals generated (80% train, 20% validation)",
                low=100,
                high=1_000_000,
            ),
            "data_seed": ParamSpec(
                "int", DEFAULT_DATA_SEED, "seed of the data generation", low=0, high=2**32 - 1
            ),
        },
        default_space={
            "adamp": {**_ADAM_SPACE, **_PROJECTION_SPACE},
            "sgdp": {**_SGD_SPACE, **_PROJECTION_SPACE},
            "adamw": _ADAM_SPACE,
            "sgd": _SGD_SPACE,
        },
    )
)
