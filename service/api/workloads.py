"""``/api/v1/workloads`` and ``/api/v1/optimizers``: what a study may name."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from service.api.deps import current_user
from service.api.errors import responses
from service.schemas import OptimizerOut, WorkloadArgOut, WorkloadOut
from workers.optimizer_specs import OPTIMIZERS
from workers.params import ParamSpec
from workers.registry import all_workloads

router = APIRouter(
    prefix="/api/v1",
    tags=["workloads"],
    dependencies=[Depends(current_user)],
    responses=responses(401),
)


def _arg(spec: ParamSpec) -> WorkloadArgOut:
    return WorkloadArgOut(
        kind=spec.kind, default=spec.default, help=spec.help, range=spec.describe_range()
    )


@router.get("/workloads", response_model=list[WorkloadOut])
def list_workloads() -> list[WorkloadOut]:
    """Registered workloads with their metric, direction, arguments and default spaces."""
    return [
        WorkloadOut(
            name=w.name,
            description=w.description,
            metric=w.metric,
            direction=w.direction,
            args={k: _arg(s) for k, s in w.args.items()},
            default_space={
                opt: {k: asdict(r) for k, r in space.items()}
                for opt, space in w.default_space.items()
            },
        )
        for w in sorted(all_workloads().values(), key=lambda w: w.name)
    ]


@router.get("/optimizers", response_model=list[OptimizerOut])
def list_optimizers() -> list[OptimizerOut]:
    """The optimizers a study may use and their knobs."""
    return [
        OptimizerOut(
            name=o.name,
            description=o.description,
            knobs={k: _arg(s) for k, s in o.knobs.items()},
        )
        for o in OPTIMIZERS.values()
    ]
