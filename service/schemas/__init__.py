"""Request and response shapes of the REST API (v1), separate from the ORM models.

One module a job, all re-exported here so that ``from service.schemas import X`` serves
every caller:

- ``common``: the named values (optimizers, samplers, states, ...), id and seed limits,
  ``Page`` and ``ErrorOut``;
- ``study_input``: ``StudyCreate``/``StudyUpdate`` and their parts, with all input
  validation, so a handler never re-checks: a bad request is answered ``422`` with the
  offending field's path (``search_space.lr.high``, ``fixed.epochs``, ...);
- ``study_output``: studies, trials, counts and importances as the API shows them;
- ``catalog``: workloads, optimizers, the cluster and health.
"""

from service.schemas.catalog import (
    ClusterNodeOut,
    ClusterOut,
    HealthOut,
    OptimizerOut,
    WorkloadArgOut,
    WorkloadOut,
)
from service.schemas.common import (
    ID_MAX,
    OFFSET_MAX,
    SEED_MAX,
    Direction,
    ErrorOut,
    OptimizerName,
    Page,
    PrunerName,
    SamplerName,
    StudyStatusName,
    TrialStateName,
    _field_error,
)
from service.schemas.study_input import (
    MAX_CHOICES,
    MAX_GRID_POINTS_PER_KNOB,
    MAX_TRIALS,
    Dimension,
    Resources,
    StudyCreate,
    StudyUpdate,
)
from service.schemas.study_output import (
    BestTrial,
    ImportanceOut,
    IntermediateValue,
    NodeOut,
    ResourcesOut,
    StudyOut,
    TrialCounts,
    TrialOut,
)

__all__ = [
    "ID_MAX",
    "MAX_CHOICES",
    "MAX_GRID_POINTS_PER_KNOB",
    "MAX_TRIALS",
    "OFFSET_MAX",
    "SEED_MAX",
    "BestTrial",
    "ClusterNodeOut",
    "ClusterOut",
    "Dimension",
    "Direction",
    "ErrorOut",
    "HealthOut",
    "ImportanceOut",
    "IntermediateValue",
    "NodeOut",
    "OptimizerName",
    "OptimizerOut",
    "Page",
    "PrunerName",
    "Resources",
    "ResourcesOut",
    "SamplerName",
    "StudyCreate",
    "StudyOut",
    "StudyStatusName",
    "StudyUpdate",
    "TrialCounts",
    "TrialOut",
    "TrialStateName",
    "WorkloadArgOut",
    "WorkloadOut",
    "_field_error",
]
