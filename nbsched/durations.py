"""Lengths of time as people write them in specs, schedules and flags: ``30s``, ``10m``, ``1h30m``."""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DURATION = 3650 * 86400.0  # ten years: a date that far ahead is still a date
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``30s``, ``10m``, ``1h30m``, ``2d``, ``500ms`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: negative" if value < 0 else f"bad duration {value!r}")
        return _bounded_duration(value, value)
    text = str(value).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"bad duration {value!r} (use e.g. 30s, 10m, 1h30m)")
    return _bounded_duration(total, value)


def _bounded_duration(seconds: float, value: Any) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"bad duration {value!r}: longer than {MAX_DURATION / 86400:.0f} days")
    return float(seconds)
