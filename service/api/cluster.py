"""``/api/v1/cluster``: the cluster's nodes, CPUs and GPUs in use, and the queue."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends

from service import repository, trial_queries
from service.api.deps import SessionDep, StateDep, current_user
from service.api.errors import responses
from service.schemas import ClusterNodeOut, ClusterOut

router = APIRouter(
    prefix="/api/v1",
    tags=["cluster"],
    dependencies=[Depends(current_user)],
    responses=responses(401),
)


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
    active = repository.active_studies(session)
    running = 0
    waiting_by_owner: Counter[str] = Counter()
    for study in active:
        if study.optuna_study_id is None:
            continue
        counts = trial_queries.state_counts(session, study.optuna_study_id)
        running += counts.get("running", 0)
        finished = sum(counts.get(s, 0) for s in ("complete", "pruned", "fail"))
        if finished + counts.get("running", 0) < study.n_trials:
            waiting_by_owner[study.owner] += 1
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
