"""The scheduling policy alone: snapshots in, starts and preemptions out (no Ray, no
threads, no sleeps). Examples for each rule, then properties over random snapshots."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from service.scheduler.policy import EPS, Demand, Holder, Snapshot, decide


def demand(study_id: int, owner: str = "ann", **fields: object) -> Demand:
    values: dict[str, object] = {
        "priority": 0,
        "cpus": 1.0,
        "gpus": 0.0,
        "startable": 10,
        "remaining": 10,
        "age": (float(study_id), study_id),
    }
    values.update(fields)
    return Demand(study_id=study_id, owner=owner, **values)  # type: ignore[arg-type]


def holder(key: int, study_id: int, owner: str = "ann", **fields: object) -> Holder:
    values: dict[str, object] = {"priority": 0, "cpus": 1.0, "gpus": 1.0, "started": float(key)}
    values.update(fields)
    return Holder(key=key, study_id=study_id, owner=owner, **values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- examples


def test_users_take_turns_so_a_small_study_is_not_starved() -> None:
    """Ann's 40-trial study and Ben's 3-trial one share two slots: Ben gets every other."""
    snap = Snapshot(
        [demand(1, "ann", startable=2, remaining=40), demand(2, "ben", startable=2, remaining=3)],
        free_cpus=2,
        served={"ann": 5},
        serves=5,
    )
    decision = decide(snap)
    assert sorted(decision.starts) == [1, 2]
    assert decision.starts[0] == 2, "ben, never served, goes first"


def test_turns_rotate_over_successive_decisions() -> None:
    """One slot frees at a time: the user served longest ago takes it, so over many
    decisions three users get slots in turn."""
    served: dict[str, int] = {}
    serves = 0
    order = []
    for _ in range(9):
        snap = Snapshot(
            [demand(i, user) for i, user in enumerate(["ann", "ben", "chen"])],
            free_cpus=1,
            served=served,
            serves=serves,
        )
        decision = decide(snap)
        (study,) = decision.starts
        order.append(study)
        served, serves = decision.served, decision.serves
    assert Counter(order) == {0: 3, 1: 3, 2: 3}
    assert order[:3] == order[3:6] == order[6:]


def test_a_users_short_study_goes_before_their_long_one() -> None:
    snap = Snapshot(
        [demand(1, remaining=12, age=(0.0, 1)), demand(2, remaining=3, age=(1.0, 2))],
        free_cpus=3,
    )
    assert decide(snap).starts[0] == 2
    assert decide(snap).starts == [2, 2, 2], "shortest remaining first, as long as it may start"


def test_higher_priority_is_served_first_and_lower_back_fills() -> None:
    snap = Snapshot(
        [demand(1, priority=0), demand(2, priority=10, startable=2)],
        free_cpus=3,
    )
    assert decide(snap).starts == [2, 2, 1]


def test_a_lower_priority_never_takes_what_a_higher_one_fits() -> None:
    """A GPU study of priority 5 fits the one free GPU; the priority-0 GPU study waits
    while the priority-0 CPU study back-fills the free CPUs."""
    snap = Snapshot(
        [
            demand(1, priority=0, gpus=1.0, startable=1),
            demand(2, priority=5, gpus=1.0, startable=1),
            demand(3, priority=0, gpus=0.0, startable=5),
        ],
        free_cpus=4,
        free_gpus=1,
    )
    assert decide(snap).starts == [2, 3, 3, 3]


def test_a_user_holds_at_most_their_gpu_share() -> None:
    snap = Snapshot(
        [demand(1, "ann", gpus=1.0), demand(2, "ben", gpus=1.0)],
        running=[holder(7, 1, "ann", gpus=1.0)],
        free_cpus=8,
        free_gpus=3,
        max_gpus_per_user=2,
    )
    starts = Counter(decide(snap).starts)
    assert starts == {1: 1, 2: 2}


def test_a_user_runs_at_most_their_trials_in_flight() -> None:
    snap = Snapshot(
        [demand(1, "ann"), demand(2, "ann"), demand(3, "ben"), demand(4, "root")],
        running=[holder(9, 1, "ann", gpus=0.0)],
        free_cpus=16,
        trial_limits={"ann": 2, "root": None, "": 3},
    )
    by_owner = Counter({1: "ann", 2: "ann", 3: "ben", 4: "root"}[s] for s in decide(snap).starts)
    assert by_owner["ann"] == 1, "one running already, limit two"
    assert by_owner["ben"] == 3, "the default limit"
    assert by_owner["root"] == 10, "no limit of their own: as many as fit and may start"


def test_nothing_starts_without_room_or_past_what_a_study_may_start() -> None:
    assert decide(Snapshot([demand(1)], free_cpus=0.5)).starts == []
    assert decide(Snapshot([demand(1, startable=2)], free_cpus=8)).starts == [1, 1]
    assert decide(Snapshot([demand(1, startable=0)], free_cpus=8)).starts == []


# --------------------------------------------------------------------------- preemption


def test_a_higher_priority_gpu_study_preempts_enough_lower_trials() -> None:
    """Four GPUs held by priority-0 trials; a priority-10 study wants two 1-GPU trials:
    the two most recently started low trials are named, nothing else."""
    running = [holder(k, 1, gpus=1.0, started=float(k)) for k in range(4)]
    snap = Snapshot(
        [demand(2, "ben", priority=10, gpus=1.0, startable=2)],
        running=running,
        free_cpus=4,
        free_gpus=0,
    )
    decision = decide(snap)
    assert decision.starts == []
    assert sorted(decision.preempt) == [2, 3]


def test_trials_already_stopping_count_as_room_coming() -> None:
    running = [holder(0, 1), holder(1, 1, stopping=True), holder(2, 1)]
    snap = Snapshot(
        [demand(2, "ben", priority=10, gpus=1.0, startable=1)],
        running=running,
        free_cpus=4,
    )
    assert decide(snap).preempt == [], "one GPU is coming free: nothing more to stop"


def test_within_one_priority_nothing_is_preempted() -> None:
    snap = Snapshot(
        [demand(2, "ben", priority=0, gpus=1.0)],
        running=[holder(0, 1, priority=0)],
        free_cpus=4,
    )
    assert decide(snap).preempt == []


def test_trials_not_preemptible_are_never_named() -> None:
    snap = Snapshot(
        [demand(2, "ben", priority=10, gpus=1.0)],
        running=[holder(0, 1, preemptible=False), holder(1, 1)],
        free_cpus=4,
    )
    assert decide(snap).preempt == [1]


def test_nothing_is_preempted_when_it_would_not_make_room() -> None:
    """A 2-GPU trial cannot start by stopping the one preemptible 1-GPU trial."""
    snap = Snapshot(
        [demand(2, "ben", priority=10, gpus=2.0)],
        running=[holder(0, 1, preemptible=False), holder(1, 1)],
        free_cpus=4,
    )
    assert decide(snap).preempt == []


def test_cpu_only_studies_never_preempt() -> None:
    snap = Snapshot(
        [demand(2, "ben", priority=10)],
        running=[holder(0, 1, gpus=0.0)],
        free_cpus=0,
    )
    assert decide(snap).preempt == []


def test_preemption_respects_the_users_gpu_share() -> None:
    snap = Snapshot(
        [demand(2, "ben", priority=10, gpus=1.0)],
        running=[holder(0, 1, "ann"), holder(1, 2, "ben", priority=10)],
        free_cpus=4,
        max_gpus_per_user=1,
    )
    assert decide(snap).preempt == [], "ben already holds his one GPU"


# --------------------------------------------------------------------------- properties

owners = st.sampled_from(["ann", "ben", "chen", "dara"])
gpus = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0])


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n = draw(st.integers(1, 6))
    demands = [
        Demand(
            study_id=i,
            owner=draw(owners),
            priority=draw(st.sampled_from([0, 0, 5, 10])),
            cpus=draw(st.sampled_from([0.5, 1.0, 2.0])),
            gpus=draw(gpus),
            startable=draw(st.integers(0, 6)),
            remaining=draw(st.integers(1, 50)),
            age=(float(i), i),
        )
        for i in range(n)
    ]
    running = [
        Holder(
            key=100 + k,
            study_id=draw(st.integers(0, n - 1)),
            owner=draw(owners),
            priority=draw(st.sampled_from([-5, 0, 5])),
            cpus=1.0,
            gpus=draw(gpus),
            started=float(k),
            preemptible=draw(st.booleans()),
            stopping=draw(st.booleans()),
        )
        for k in range(draw(st.integers(0, 6)))
    ]
    limits: dict[str, int | None] = draw(
        st.dictionaries(st.sampled_from(["ann", "ben", ""]), st.none() | st.integers(0, 4))
    )
    return Snapshot(
        demands=demands,
        running=running,
        free_cpus=draw(st.sampled_from([0.0, 1.0, 2.0, 4.0, 8.0])),
        free_gpus=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])),
        served=draw(st.dictionaries(owners, st.integers(1, 10))),
        serves=10,
        max_gpus_per_user=draw(st.none() | st.sampled_from([1.0, 2.0])),
        trial_limits=limits,
    )


def _limit(snap: Snapshot, owner: str) -> int | None:
    limits = snap.trial_limits
    return limits[owner] if owner in limits else limits.get("")


class Replay:
    """Free room and what each user holds, as the starts are replayed in order."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.cpus, self.gpus = snap.free_cpus, snap.free_gpus
        self.gpus_of: Counter[str] = Counter()
        self.trials_of: Counter[str] = Counter()
        for h in snap.running:
            self.gpus_of[h.owner] += h.gpus  # type: ignore[assignment]
            self.trials_of[h.owner] += 1
        self.left = {d.study_id: d.startable for d in snap.demands}

    def may_start(self, d: Demand) -> bool:
        cap, limit = self.snap.max_gpus_per_user, _limit(self.snap, d.owner)
        return (
            self.left[d.study_id] > 0
            and d.cpus <= self.cpus + EPS
            and d.gpus <= self.gpus + EPS
            and (not d.gpus or cap is None or self.gpus_of[d.owner] + d.gpus <= cap + EPS)
            and (limit is None or self.trials_of[d.owner] < limit)
        )

    def start(self, d: Demand) -> None:
        assert self.may_start(d), f"started {d} without room, past a limit or its count"
        self.cpus -= d.cpus
        self.gpus -= d.gpus
        self.gpus_of[d.owner] += d.gpus  # type: ignore[assignment]
        self.trials_of[d.owner] += 1
        self.left[d.study_id] -= 1


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_every_start_fits_and_stays_within_every_limit(snap: Snapshot) -> None:
    """Never more starts than the capacity, a study's count, a user's GPU share or their
    trials in flight allow (``Replay.start`` asserts each)."""
    by_id = {d.study_id: d for d in snap.demands}
    replay = Replay(snap)
    for study_id in decide(snap).starts:
        replay.start(by_id[study_id])


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_a_higher_priority_is_never_passed_over_while_it_fits(snap: Snapshot) -> None:
    """When a study starts, no study of a higher priority could have started instead."""
    by_id = {d.study_id: d for d in snap.demands}
    replay = Replay(snap)
    for study_id in decide(snap).starts:
        started = by_id[study_id]
        passed_over = [
            d for d in snap.demands if d.priority > started.priority and replay.may_start(d)
        ]
        assert not passed_over, f"{started} started while {passed_over} fit"
        replay.start(started)


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_nothing_that_fits_is_left_waiting(snap: Snapshot) -> None:
    """Work-conserving: after the starts, no study that may start a trial has room for it."""
    by_id = {d.study_id: d for d in snap.demands}
    replay = Replay(snap)
    for study_id in decide(snap).starts:
        replay.start(by_id[study_id])
    assert not [d for d in snap.demands if replay.may_start(d)]


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_users_of_a_priority_take_turns(snap: Snapshot) -> None:
    """Among users of one priority whose trials need the same room, none is given a
    second slot while another of them, who may still start, has had none more."""
    by_id = {d.study_id: d for d in snap.demands}
    replay = Replay(snap)
    given_: Counter[tuple[int, str]] = Counter()
    for study_id in decide(snap).starts:
        d = by_id[study_id]
        rivals = [
            o
            for o in snap.demands
            if o.priority == d.priority
            and o.owner != d.owner
            and (o.cpus, o.gpus) == (d.cpus, d.gpus)
            and replay.may_start(o)
            and given_[(o.priority, o.owner)] < given_[(d.priority, d.owner)]
        ]
        assert not rivals, f"{d.owner} served again before {[o.owner for o in rivals]}"
        replay.start(d)
        given_[(d.priority, d.owner)] += 1


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_shortest_remaining_first_within_a_user(snap: Snapshot) -> None:
    """A user's study with more trials left never starts while their study of the same
    priority and size, with fewer left, could have started."""
    by_id = {d.study_id: d for d in snap.demands}
    replay = Replay(snap)
    for study_id in decide(snap).starts:
        d = by_id[study_id]
        shorter = [
            o
            for o in snap.demands
            if o.owner == d.owner
            and o.priority == d.priority
            and (o.cpus, o.gpus) == (d.cpus, d.gpus)
            and o.remaining < d.remaining
            and replay.may_start(o)
        ]
        assert not shorter, f"{d} started before the shorter {shorter}"
        replay.start(d)


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_preemption_is_bounded_and_only_downwards(snap: Snapshot) -> None:
    """Only preemptible, not yet stopping GPU trials of a priority below some blocked GPU
    study's are named; never one when no study outranks it."""
    decision = decide(snap)
    by_key = {h.key: h for h in snap.running}
    top = max((d.priority for d in snap.demands if d.gpus and d.startable), default=None)
    for key in decision.preempt:
        h = by_key[key]
        assert h.preemptible
        assert not h.stopping
        assert h.gpus > 0
        assert top is not None
        assert h.priority < top
    assert len(set(decision.preempt)) == len(decision.preempt)
