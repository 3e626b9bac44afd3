"""``/api/v1/cluster``: the cluster's nodes, CPUs and GPUs in use, and the queue."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from service import repository, trial_queries
from service.api.deps import SessionDep, StateDep, current_user
from service.api.errors import responses
from service.scheduler.ledger import counts_of
from service.schemas import ClusterNodeOut, ClusterOut
from service.study_spec import target_of

router = APIRouter(
    prefix="/api/v1",
    tags=["cluster"],
    dependencies=[Depends(current_user)],
    responses=responses(401),
)


def queue_of(session: Session) -> tuple[int, Counter[str]]:
    """Trials running, and per owner the studies with trials still to start, counted by
    the scheduler's own ledger rules (a retried attempt is not finished; a waiting re-run
    is still to start)."""
    running = 0
    waiting_by_owner: Counter[str] = Counter()
    for study in repository.active_studies(session):
        if study.optuna_study_id is None:
            continue
        counts = counts_of(trial_queries.ledger_rows(session, study.optuna_study_id))
        running += counts.running
        if counts.to_start(target_of(study.spec)) > 0:
            waiting_by_owner[study.owner] += 1
    return running, waiting_by_owner


@router.get("/cluster", response_model=ClusterOut)
def cluster(session: SessionDep, state: StateDep) -> ClusterOut:
    """What the cluster has, what is in use, and how much work waits."""
    nodes = [
        ClusterNodeOut(
            node_id=n.node_id,
            address=n.address,
            alive=n.alive,
            is_head=n.is_head,
            cpus_total=n.cpus,
            gpus_total=n.gpus,
            resources=dict(n.resources),
        )
        for n in state.cluster.nodes(dead=True)
    ]
    capacity = state.cluster.capacity()
    running, waiting_by_owner = queue_of(session)
    return ClusterOut(
        nodes=nodes,
        cpus_total=capacity.cpus_total,
        cpus_in_use=max(0.0, capacity.cpus_total - capacity.cpus_free),
        gpus_total=capacity.gpus_total,
        gpus_in_use=max(0.0, capacity.gpus_total - capacity.gpus_free),
        running_trials=running,
        queue_depth=sum(waiting_by_owner.values()),
        queue_by_owner=dict(waiting_by_owner),
    )
