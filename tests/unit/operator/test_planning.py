"""Exhaustive tables for the pure core: every combination of every enum input.

The expected answers are written independently of the implementation: ``plan`` and
``is_complete`` against literal tables transcribed from docs/state-machine.md, ``observe`` against a
rule list transcribed from docs/observation.md in a different shape (first matching rule wins).
"""

from __future__ import annotations

import itertools

import pytest

from codehub.adapters.interfaces import InstanceInfo
from codehub.crd_like.models import derive_display
from codehub.operator.observation import (
    ErrorRule,
    instance_state,
    instance_state_of,
    observe,
    observe_detail,
)
from codehub.operator.planning import (
    DesiredState,
    Display,
    InstanceState,
    ObservedStatus,
    Operation,
    Unobserved,
    is_complete,
    plan,
    when_unobserved,
)

O = ObservedStatus  # noqa: E741
D = DesiredState
Op = Operation
I = InstanceState  # noqa: E741

OBSERVED: list[O | None] = [None, *O]
ARCHIVES: list[str | None] = [None, "archives/u/op/home.tar.gz"]

# docs/state-machine.md planning table, operation NONE, not deleting:
# (observed, desired, has_archive).
PLAN_TABLE: dict[tuple[O | None, D, bool], Op] = {}
for _arch in (False, True):
    _step_up = Op.RESTORING if _arch else Op.PROVISIONING
    PLAN_TABLE.update(
        {
            (None, D.PENDING, _arch): Op.NONE,
            (None, D.STANDBY, _arch): _step_up,
            (None, D.RUNNING, _arch): _step_up,
            (O.PENDING, D.PENDING, _arch): Op.NONE,
            (O.PENDING, D.STANDBY, _arch): _step_up,
            (O.PENDING, D.RUNNING, _arch): _step_up,
            (O.STANDBY, D.PENDING, _arch): Op.ARCHIVING,
            (O.STANDBY, D.STANDBY, _arch): Op.NONE,
            (O.STANDBY, D.RUNNING, _arch): Op.STARTING,
            (O.RUNNING, D.PENDING, _arch): Op.STOPPING,
            (O.RUNNING, D.STANDBY, _arch): Op.STOPPING,
            (O.RUNNING, D.RUNNING, _arch): Op.NONE,
            (O.ERROR, D.PENDING, _arch): Op.NONE,
            (O.ERROR, D.STANDBY, _arch): Op.NONE,
            (O.ERROR, D.RUNNING, _arch): Op.NONE,
            (O.DELETED, D.PENDING, _arch): Op.NONE,
            (O.DELETED, D.STANDBY, _arch): Op.NONE,
            (O.DELETED, D.RUNNING, _arch): Op.NONE,
        }
    )


def expected_plan(
    observed: O | None, desired: D, operation: Op, archive: str | None, deleting: bool
) -> Op:
    if deleting:
        return Op.DELETING
    if operation != Op.NONE:
        return operation
    return PLAN_TABLE[(observed, desired, archive is not None)]


def test_plan_table_covers_every_observed_desired_pair() -> None:
    assert len(PLAN_TABLE) == len(OBSERVED) * len(D) * 2


@pytest.mark.parametrize("deleting", [False, True])
def test_plan_every_combination(deleting: bool) -> None:
    checked = 0
    for observed, desired, operation, archive in itertools.product(OBSERVED, D, Op, ARCHIVES):
        got = plan(observed, desired, operation, archive, deleting)
        assert got == expected_plan(observed, desired, operation, archive, deleting), (
            observed,
            desired,
            operation,
            archive,
            deleting,
        )
        checked += 1
    assert checked == len(OBSERVED) * len(D) * len(Op) * len(ARCHIVES)


def test_deletion_overrides_error_and_running_operations() -> None:
    for operation in Op:
        assert plan(O.ERROR, D.RUNNING, operation, None, True) is Op.DELETING


# What each operation leaves behind when it completes (container, volume, archive).
EFFECT: dict[Op, tuple[O, bool]] = {
    Op.PROVISIONING: (O.STANDBY, False),
    Op.RESTORING: (O.STANDBY, True),
    Op.STARTING: (O.RUNNING, False),
    Op.STOPPING: (O.STANDBY, False),
    Op.ARCHIVING: (O.PENDING, True),
}


@pytest.mark.parametrize(
    ("start", "archived", "desired", "steps"),
    [
        (O.PENDING, False, D.RUNNING, [Op.PROVISIONING, Op.STARTING]),
        (O.PENDING, True, D.RUNNING, [Op.RESTORING, Op.STARTING]),
        (O.RUNNING, False, D.PENDING, [Op.STOPPING, Op.ARCHIVING]),
        (O.RUNNING, True, D.STANDBY, [Op.STOPPING]),
        (O.STANDBY, True, D.PENDING, [Op.ARCHIVING]),
        (O.PENDING, True, D.STANDBY, [Op.RESTORING]),
        (O.RUNNING, False, D.RUNNING, []),
    ],
)
def test_plan_walks_one_step_at_a_time(
    start: O, archived: bool, desired: D, steps: list[Op]
) -> None:
    observed, archive = start, ARCHIVES[1] if archived else None
    taken: list[Op] = []
    for _ in range(5):
        operation = plan(observed, desired, Op.NONE, archive, False)
        if operation is Op.NONE:
            break
        # while it runs, plan keeps answering the same operation whatever is desired
        for other in D:
            assert plan(observed, other, operation, archive, False) is operation
        taken.append(operation)
        observed, keeps_archive = EFFECT[operation]
        archive = ARCHIVES[1] if keeps_archive or archive else None
    assert taken == steps


# -- observe -----------------------------------------------------------------------------


def expected_observe(
    instance: I,
    volume: bool,
    terminal: bool,
    previous: O | None,
    operation: Op,
    archive: str | None,
    previous_status: O | None,
) -> O:
    container = instance != I.ABSENT
    never_held = previous in (None, O.PENDING, O.DELETED) or (
        previous == O.ERROR and previous_status in (O.PENDING, O.DELETED)
    )
    rules: list[tuple[bool, O]] = [
        (terminal, O.ERROR),  # 1
        (container and not volume, O.ERROR),  # 2
        (instance == I.RUNNING and volume, O.RUNNING),  # 3
        (volume, O.STANDBY),  # 4
        (operation == Op.DELETING, O.DELETED),  # what DELETING leaves
        (archive is not None, O.PENDING),  # 5
        (operation in (Op.NONE, Op.PROVISIONING) and never_held, O.PENDING),  # 6, new
        (True, O.ERROR),  # 6, DataLost
    ]
    return next(result for condition, result in rules if condition)


def test_observe_every_combination() -> None:
    checked = 0
    for combo in itertools.product(
        I, [False, True], [False, True], OBSERVED, Op, ARCHIVES, OBSERVED
    ):
        instance, volume, terminal, previous, operation, archive, previous_status = combo
        got = observe_detail(
            instance,
            volume,
            terminal_error=terminal,
            previous=previous,
            operation=operation,
            archive_key=archive,
            previous_status=previous_status,
        )
        assert got.status == expected_observe(*combo), combo
        assert (got.error_rule is not None) == (got.status is O.ERROR), combo
        checked += 1
    assert checked == 3 * 2 * 2 * 6 * 7 * 2 * 6


@pytest.mark.parametrize(
    ("info", "state"),
    [
        (None, I.ABSENT),
        (InstanceInfo("u", running=False), I.STOPPED),  # exited, created, paused
        (InstanceInfo("u", running=True, upstream="http://127.0.0.1:1"), I.RUNNING),
    ],
)
def test_one_classification_of_a_container_for_batch_and_single(
    info: InstanceInfo | None, state: I
) -> None:
    """The HealthMonitor's listing and the reconciler's inspect both go through here."""
    assert instance_state_of(info) is state
    # a stopped container is a container: without its volume it breaks rule 2
    got = observe_detail(
        state,
        False,
        terminal_error=False,
        previous=O.RUNNING,
        operation=Op.NONE,
        archive_key=None,
    )
    assert got.status is O.ERROR
    if state is I.ABSENT:
        assert got.error_rule is ErrorRule.DATA_LOST
    else:
        assert got.error_rule is ErrorRule.NO_VOLUME


@pytest.mark.parametrize(
    ("running", "state"), [(True, I.RUNNING), (None, I.STOPPED), (False, I.ABSENT)]
)
def test_observe_tristate_container_flag(running: bool | None, state: I) -> None:
    assert instance_state(running) is state
    for volume, previous, operation in itertools.product([False, True], OBSERVED, Op):
        assert observe(
            running,
            volume,
            terminal_error=False,
            previous=previous,
            operation=operation,
            archive_key=None,
        ) == expected_observe(state, volume, False, previous, operation, None, None)


def test_new_workspace_is_pending_but_vanished_data_is_error() -> None:
    kw = {"terminal_error": False, "archive_key": None}
    assert observe(False, False, previous=None, operation=Op.NONE, **kw) is O.PENDING
    assert observe(False, False, previous=None, operation=Op.PROVISIONING, **kw) is O.PENDING
    assert observe(False, False, previous=O.STANDBY, operation=Op.NONE, **kw) is O.ERROR
    assert observe(False, False, previous=O.RUNNING, operation=Op.NONE, **kw) is O.ERROR
    assert observe(False, False, previous=O.PENDING, operation=Op.STARTING, **kw) is O.ERROR
    assert observe(False, False, previous=O.RUNNING, operation=Op.DELETING, **kw) is O.DELETED


# -- is_complete -------------------------------------------------------------------------


# docs/state-machine.md "done when observed":
# (instance, volume, own archive, restore returned) -> done.
def expected_complete(op: Op, instance: I, volume: bool, archive: bool, restored: bool) -> bool:
    no_container = instance == I.ABSENT
    return {
        Op.NONE: True,
        Op.PROVISIONING: volume,
        Op.RESTORING: volume and restored,
        Op.STARTING: instance == I.RUNNING and volume,
        Op.STOPPING: no_container and volume,
        Op.ARCHIVING: archive and not volume,
        Op.DELETING: no_container and not volume,
    }[op]


def test_is_complete_every_combination() -> None:
    checked = 0
    for op, instance, volume, archive, restored in itertools.product(
        Op, I, [False, True], ARCHIVES, [False, True]
    ):
        got = is_complete(op, instance, volume, archive, restored)
        assert got == expected_complete(op, instance, volume, archive is not None, restored), (
            op,
            instance,
            volume,
            archive,
            restored,
        )
        checked += 1
    assert checked == 7 * 3 * 2 * 2 * 2


# -- display -----------------------------------------------------------------------------

DISPLAY_TABLE: dict[tuple[O | None, bool], Display] = {
    (None, False): Display.PENDING,
    (None, True): Display.ARCHIVED,
    (O.PENDING, False): Display.PENDING,
    (O.PENDING, True): Display.ARCHIVED,
    (O.STANDBY, False): Display.STANDBY,
    (O.STANDBY, True): Display.STANDBY,
    (O.RUNNING, False): Display.RUNNING,
    (O.RUNNING, True): Display.RUNNING,
    (O.ERROR, False): Display.ERROR,
    (O.ERROR, True): Display.ERROR,
    (O.DELETED, False): Display.DELETED,
    (O.DELETED, True): Display.DELETED,
}


def test_derive_display_every_combination() -> None:
    for observed, archive in itertools.product(OBSERVED, ARCHIVES):
        assert derive_display(observed, archive) is DISPLAY_TABLE[(observed, archive is not None)]


# when_unobserved (docs/errors.md, "The container engine unreachable"): (pending work?,
# terminal?, unstarted error?) -> decision, written out in full.
UNOBSERVED_TABLE: dict[tuple[bool, bool, bool], Unobserved] = {
    (False, False, False): Unobserved.WAIT,  # idle and converged: never an error
    (False, False, True): Unobserved.CLEAR,  # the unstarted work is no longer wanted
    (False, True, False): Unobserved.WAIT,
    (False, True, True): Unobserved.WAIT,  # a terminal error waits for an administrator
    (True, False, False): Unobserved.FAIL,  # first attempt of pending work
    (True, False, True): Unobserved.FAIL,  # a later attempt
    (True, True, False): Unobserved.WAIT,
    (True, True, True): Unobserved.WAIT,
}


def test_when_unobserved_every_combination() -> None:
    for pending, terminal, unstarted in itertools.product(list(Op), [False, True], [False, True]):
        expected = UNOBSERVED_TABLE[(pending is not Op.NONE, terminal, unstarted)]
        got = when_unobserved(pending, terminal=terminal, unstarted_error=unstarted)
        assert got is expected, (pending, terminal, unstarted)


def test_pending_work_without_facts_follows_plan() -> None:
    """Which workspaces accrue failures while the engine is down: exactly those whose
    last observation is not the desired level, and every one being deleted."""
    assert plan(O.RUNNING, D.RUNNING, Op.NONE, None, False) is Op.NONE
    assert plan(O.STANDBY, D.STANDBY, Op.NONE, None, False) is Op.NONE
    assert plan(O.PENDING, D.PENDING, Op.NONE, "a", False) is Op.NONE
    assert plan(O.RUNNING, D.STANDBY, Op.NONE, None, False) is Op.STOPPING
    assert plan(O.RUNNING, D.RUNNING, Op.NONE, None, True) is Op.DELETING
    assert plan(O.ERROR, D.RUNNING, Op.NONE, None, False) is Op.NONE
