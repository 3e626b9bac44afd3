"""Checkpoints as a workload sees them: the store (local disk and S3), atomic writes, exact
round trips of a model with its AdamP state, and a stopped trial resuming where it was."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from adamp import SGDP, AdamP
from tests.support.s3 import S3Server, s3_server
from workers.checkpoint_format import encode
from workers.checkpoints import CheckpointStore, CheckpointStoreError
from workers.context import TrialContext
from workers.messages import Finished, Placement, Report, Resumed, TrialRequest
from workers.registry import get_workload
from workers.runner import run_trial


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "local":
        return CheckpointStore(str(tmp_path / "checkpoints"))
    server: S3Server = request.getfixturevalue("s3")
    return server.store(request.node.name.replace("[", "-").replace("]", ""))


def test_a_saved_checkpoint_comes_back_and_is_deleted_with_its_study(
    store: CheckpointStore,
) -> None:
    assert store.load(1, 0) is None
    store.save(1, 0, encode(2, {"w": torch.arange(5.0), "epoch": 2}))
    store.save(1, 0, encode(3, {"w": torch.arange(6.0), "epoch": 3}))  # replaces the first
    store.save(1, 4, encode(0, {"x": 1}))
    store.save(2, 0, encode(0, {"y": 1}))
    got = store.load(1, 0)
    assert got is not None
    assert got.step == 3
    assert got.state["epoch"] == 3
    assert torch.equal(got.state["w"], torch.arange(6.0))
    assert store.lineages(1) == [0, 4]
    assert store.studies() == [1, 2]
    assert b"".join(store.chunks(1, 4, chunk=7) or []) == store.load_bytes(1, 4)
    store.delete(1, 4)
    assert store.lineages(1) == [0]
    store.delete_study(1)
    assert store.load(1, 0) is None
    assert store.studies() == [2]


def test_a_reader_never_sees_half_a_checkpoint(tmp_path: Path) -> None:
    """Two large checkpoints written in turn while a reader reads: every read decodes whole,
    and no temporary file is left behind."""
    store = CheckpointStore(str(tmp_path))
    payloads = [encode(i, {"w": torch.full((400_000,), float(i))}) for i in range(2)]
    store.save(7, 0, payloads[0])
    done = threading.Event()

    def write() -> None:
        for n in range(30):
            store.save(7, 0, payloads[n % 2])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set() or reads < 5:
        data = store.load_bytes(7, 0)
        assert data in payloads, "a reader saw a partly written checkpoint"
        reads += 1
    writer.join()
    assert [p.name for p in (tmp_path / "study-7").iterdir()] == ["trial-0.pt"]


def test_a_full_store_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(str(tmp_path))

    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.fs, "open", full)
    with pytest.raises(CheckpointStoreError, match="the store is full"):
        store.save(1, 0, encode(0, {}))
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_an_unusable_store_url_is_a_clear_error() -> None:
    with pytest.raises(CheckpointStoreError, match="ADAMP_TUNE_CHECKPOINT_URL"):
        CheckpointStore("nosuchprotocol://bucket/x")


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3)
    )


@pytest.mark.parametrize("optimizer", [AdamP, SGDP])
def test_a_model_and_its_optimizer_state_round_trip_exactly(
    store: CheckpointStore, optimizer: type[torch.optim.Optimizer]
) -> None:
    """Train, checkpoint, restore into fresh objects, train on: bit-identical to going on."""
    torch.manual_seed(0)
    inputs, labels = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))

    def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        opt.step()

    model = _model()
    opt = optimizer(model.parameters(), lr=0.05, weight_decay=1e-2)
    for _ in range(3):
        step(model, opt)
    store.save(3, 1, encode(2, {"model": model.state_dict(), "optimizer": opt.state_dict()}))

    restored = _model()
    restored_opt = optimizer(restored.parameters(), lr=0.05, weight_decay=1e-2)
    saved = store.load(3, 1)
    assert saved is not None
    restored.load_state_dict(saved.state["model"])
    restored_opt.load_state_dict(saved.state["optimizer"])
    for _ in range(3):
        step(model, opt)
        step(restored, restored_opt)
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_context_resumes_after_the_saved_step(tmp_path: Path) -> None:
    events: list[Report | Resumed] = []
    ctx = _ctx(tmp_path, events.append)
    assert ctx.load_checkpoint() is None, "a first attempt finds nothing"
    ctx.report(0.5, 0)
    ctx.report(0.6, 1)
    ctx.save_checkpoint({"epoch": 1})
    again = _ctx(tmp_path, events.append)
    assert again.load_checkpoint() == {"epoch": 1}
    assert again.last_step == 1
    assert events[-1] == Resumed(1)
    with pytest.raises(ValueError, match="must increase"):
        again.report(0.6, 1)  # a step the earlier attempt reported is refused


def test_with_checkpoints_off_saves_are_dropped(tmp_path: Path) -> None:
    ctx = TrialContext("adamp", {}, {}, 0, torch.device("cpu"), emit=lambda _: None)
    ctx.save_checkpoint({"a": 1})
    assert ctx.load_checkpoint() is None


def _ctx(root: Path, emit: Any) -> TrialContext:
    return TrialContext(
        "adamp",
        {},
        {},
        0,
        torch.device("cpu"),
        emit=emit,
        checkpoints=CheckpointStore(str(root)),
        study_id=5,
        lineage=2,
    )


def _request(root: Path, workload: str, args: dict[str, Any], trial: int) -> TrialRequest:
    spec = get_workload(workload).args
    return TrialRequest(
        study_id=1,
        trial_number=trial,
        workload=workload,
        optimizer="adamp",
        knobs={"lr": 0.01},
        args={name: args.get(name, p.default) for name, p in spec.items()},
        seed=1234,
        checkpoint_url=str(root),
        lineage=0,
    )


@pytest.mark.parametrize(
    ("workload", "args"),
    [
        ("digits-cnn", {"epochs": 4, "width": 4, "batch_size": 128}),
        ("mnist1d-cnn", {"epochs": 4, "width": 4, "batch_size": 256}),
        ("synthetic", {"steps": 6, "noise": 0.3, "sleep_s": 0.01}),
    ],
)
def test_a_stopped_builtin_resumes_and_ends_where_an_uninterrupted_run_ends(
    tmp_path: Path, workload: str, args: dict[str, Any]
) -> None:
    placement = Placement("n", "127.0.0.1", "h", 1)
    whole = list(run_trial(_request(tmp_path / "whole", workload, args, 0), placement))
    whole_reports = [e for e in whole if isinstance(e, Report)]

    first = run_trial(_request(tmp_path / "split", workload, args, 0), placement)
    for event in first:
        if isinstance(event, Report) and event.step == 1:
            break
    first.close()  # the trial is stopped in its third epoch, as a killed worker is
    resumed = list(run_trial(_request(tmp_path / "split", workload, args, 1), placement))

    assert [type(e).__name__ for e in resumed[:2]] == ["Started", "Resumed"]
    assert resumed[1] == Resumed(1)
    reports = [e for e in resumed if isinstance(e, Report)]
    assert [r.step for r in reports] == [r.step for r in whole_reports][2:]
    assert [r.value for r in reports] == [r.value for r in whole_reports][2:]
    assert isinstance(whole[-1], Finished)
    assert isinstance(resumed[-1], Finished)
    assert resumed[-1].value == whole[-1].value
    assert resumed[-1].user_attrs == whole[-1].user_attrs, "weight norms of every epoch too"
