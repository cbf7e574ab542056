"""A change to a schedule (``PATCH /schedules/{id}``, ``Service.update_schedule``): which trigger
fields the changed schedule has. Pure: the schedule's trigger fields and the changes in, its new
trigger fields out (``spec.schedule_fields`` then checks them as a new schedule's).

The fields given replace the schedule's and the others stay, so a cron schedule's zone changes
alone and a files schedule keeps its pattern when only ``poll`` changes. A new kind (``cron``,
``every``, ``at``, ``after``, ``files``) replaces the old one, keeping the old fields that go with
the new kind (a cron schedule made ``every`` keeps its zone; a new ``every`` restarts from now
unless ``start`` is given). A field that goes with another kind than the schedule's is an error
naming it: before, a ``timezone`` alone left a schedule without a kind, and a ``state`` on a
files schedule was dropped without a word.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbsched.errors import ScheduleError
from nbsched.events import SCHEDULE_KINDS
from nbsched.spec import KIND_KEYS

# the trigger fields each kind of schedule takes besides its own key (a time schedule's catchup
# and misfire_grace are the schedule's, not its trigger's)
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(k for k in keys if k not in ("catchup", "misfire_grace")) for kind, keys in KIND_KEYS.items()
}
TRIGGER_KEYS = frozenset(SCHEDULE_KINDS) | {k for keys in KIND_FIELDS.values() for k in keys}


def changed_trigger(
    current: Mapping[str, Any], changes: Mapping[str, Any], *, where: str = "schedule"
) -> dict[str, Any] | None:
    """The trigger fields of the schedule whose trigger is ``current`` once ``changes`` apply;
    None when the changes leave its trigger as it is."""
    given = {k: v for k, v in changes.items() if k in TRIGGER_KEYS}
    if not given:
        return None
    old = next(k for k in SCHEDULE_KINDS if k in current)
    kinds = [k for k in SCHEDULE_KINDS if k in given]
    if len(kinds) > 1:  # schedule_fields says so, naming both
        return given
    kind = kinds[0] if kinds else old
    for key in given:
        if key != kind and key not in KIND_FIELDS[kind]:
            takes = [k for k, fields in KIND_FIELDS.items() if key in fields or k == key]
            raise ScheduleError(
                f"{where}.{key}: goes with {' or '.join(takes)}, and this is {_a(kind)} {kind} schedule"
                + ("" if kinds else f" (give {' or '.join(takes)} too, to change its kind)")
            )
    kept = {k: v for k, v in current.items() if k == kind or k in KIND_FIELDS[kind]}
    if kind == "every" and "every" in given:
        kept.pop("start", None)  # a new interval starts from now, unless its start is given
    return {**kept, **given}


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
