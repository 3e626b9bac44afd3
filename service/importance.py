"""Parameter importances of a study, bounded in cost however large the study grows.

fANOVA's cost grows with the trials it fits, and on a 400-trial study one computation took
about 15 s of a CPU the scheduler shares. So importances are computed over at most the
``MAX_TRIALS`` latest complete trials, one computation at a time, and a running study's
are refreshed no more often than their cost allows (``service.plot_cache``, shared with
the dashboard's plots); everyone asking meanwhile gets the last answer, marked stale.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

MAX_TRIALS = 1_000
"""Complete trials fANOVA fits at most: the latest ones."""
EVALUATOR = "fanova"


def importances(
    storage: optuna.storages.BaseStorage, study_name: str, searched: list[str]
) -> dict[str, Any]:
    """``{importances, n_complete, n_used, evaluator, note}`` for a study's searched knobs."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(complete)
    answer: dict[str, Any] = {
        "importances": {},
        "n_complete": n,
        "n_used": min(n, MAX_TRIALS),
        "evaluator": EVALUATOR,
        "note": None,
    }
    if n < 2:
        return {**answer, "note": "importances need at least 2 complete trials"}
    if len(searched) < 2:
        return {
            **answer,
            "importances": dict.fromkeys(searched, 1.0),
            "note": "only one parameter is searched",
        }
    subject = study
    if n > MAX_TRIALS:
        subject = optuna.create_study(directions=study.directions)
        subject.add_trials(sorted(complete, key=lambda t: t.number)[-MAX_TRIALS:])
        answer["note"] = f"over the latest {MAX_TRIALS} of {n} complete trials"
    try:
        # Seeded, so the same trials always give the same answer (no jitter on refresh).
        values = optuna.importance.get_param_importances(
            subject,
            params=searched,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        )
    except (ValueError, RuntimeError) as err:
        return {**answer, "note": str(err)}
    return {**answer, "importances": {k: float(v) for k, v in values.items()}}


def importances_at(database_url: str, study_name: str, searched: list[str]) -> dict[str, Any]:
    """``importances`` of a study on the database at ``database_url``: what the service's
    worker process runs (``service.offload``), so that fANOVA never holds the service's
    interpreter lock."""
    from service.offload import storage  # noqa: PLC0415 - the worker's storages

    return importances(storage(database_url), study_name, searched)
