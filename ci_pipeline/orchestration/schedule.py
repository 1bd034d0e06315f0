"""Schedule expressions: five-field cron, "at HH:MM on chosen weekdays", and IANA time zones.

The checks here run when the configuration loads, so an impossible schedule (``0 0 31 2 *``: February never has
a 31st) or a misspelt time zone is reported with its key path before anything starts.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FULL_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
#: The longest each month can be (February in a leap year).
MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
)
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class CronSpec:
    """The values each field of a cron expression allows (day of week: 0 = Sunday)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool


def _value(token: str, low: int, high: int, names: tuple[str, ...], field: str) -> int:
    lowered = token.lower()
    if names and lowered in names:
        return names.index(lowered) + (1 if field == "month" else 0)
    if not token.isdigit():
        raise ValueError(f"{field} {token!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    number = int(token)
    if not low <= number <= high:
        raise ValueError(f"{field} {number} is outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: tuple[str, ...], field: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{field} {text!r} has an empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field} step {step_text!r} must be a positive whole number")
            step = int(step_text)
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, stop = _value(first, low, high, names, field), _value(last, low, high, names, field)
            if start > stop:
                raise ValueError(f"{field} range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> CronSpec:
    """Parse a five-field cron expression (or a macro such as ``@daily``).

    Raises:
        ValueError: naming the field that is wrong, or saying why the schedule would never run.
    """
    text = MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(parts)} fields; use five: minute hour day-of-month month day-of-week "
            "(e.g. '0 2 * * *' for 02:00 every day)"
        )
    sets = [_field(part, low, high, names, name) for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    spec = CronSpec(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] != "*", parts[4] != "*")
    # With both day fields restricted cron runs on either, so only day-of-month alone can make it impossible.
    possible = any(day <= MONTH_DAYS[month - 1] for month in spec.months for day in spec.days)
    if spec.days_restricted and not spec.weekdays_restricted and not possible:
        raise ValueError(f"cron {expression!r} never runs: none of the months it names has those days")
    return spec


def validate_cron(expression: str) -> str:
    """Return the expression unchanged if it is a valid cron that can run; else raise ValueError."""
    parse_cron(expression)
    return expression.strip()


def validate_timezone(name: str) -> str:
    """Return an IANA time zone name unchanged if it exists (``Europe/Amsterdam``); else raise ValueError."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = sorted(z for z in zoneinfo.available_timezones() if z.lower().endswith(name.lower().split("/")[-1]))
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Amsterdam'{hint}"
        ) from None
    return name


def parse_time(text: str) -> tuple[int, int]:
    """``"02:30"`` -> ``(2, 30)``; raise ValueError for anything that is not a 24-hour HH:MM time."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"time {text!r} is not HH:MM on a 24-hour clock (e.g. '02:30' or '18:00')")
    return int(match.group(1)), int(match.group(2))


def weekday_number(name: str) -> int:
    """``"mon"`` / ``"Monday"`` -> 1 (cron numbering, Sunday = 0)."""
    key = name.strip().lower()
    for number, full in enumerate(FULL_DAY_NAMES):
        if key in (full, full[:3]):
            return number
    raise ValueError(f"weekday {name!r} is not one of mon, tue, wed, thu, fri, sat, sun")


def cron_for_times(times: list[str], weekdays: list[str] | None = None) -> list[str]:
    """Cron expressions for "at these times of day, on these weekdays (default every day)".

    Times that share a minute share one expression, so ``["02:00", "14:00"]`` gives ``["0 2,14 * * *"]``.

    Examples:
        >>> cron_for_times(["02:00", "14:30"], ["mon", "fri"])
        ['0 2 * * 1,5', '30 14 * * 1,5']
    """
    if not times:
        raise ValueError("give at least one time of day")
    hours_by_minute: dict[int, set[int]] = {}
    for text in times:
        hour, minute = parse_time(text)
        hours_by_minute.setdefault(minute, set()).add(hour)
    days = "*"
    if weekdays:
        numbers = sorted({weekday_number(day) for day in weekdays})
        days = "*" if len(numbers) == 7 else ",".join(str(n) for n in numbers)
    return [
        f"{minute} {','.join(str(h) for h in sorted(hours))} * * {days}"
        for minute, hours in sorted(hours_by_minute.items())
    ]


def _spoken_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_cron(expression: str) -> str:
    """A cron expression in words, for schedule descriptions; an expression with no short wording is quoted.

    Examples:
        >>> describe_cron("0 2 * * *")
        'every day at 02:00'
        >>> describe_cron("30 6,18 * * 1,5")
        'on Mondays and Fridays at 06:30 and 18:30'
        >>> describe_cron("*/15 * * * *")
        "on cron '*/15 * * * *'"
    """
    spec = parse_cron(expression)
    quoted = f"on cron {expression.strip()!r}"
    if len(spec.months) != 12 or (spec.days_restricted and spec.weekdays_restricted):
        return quoted
    if len(spec.hours) == 24 and len(spec.minutes) == 1:
        when = f"every hour at minute {min(spec.minutes):02d}"
    elif len(spec.hours) * len(spec.minutes) <= 6:
        when = "at " + _spoken_list([f"{h:02d}:{m:02d}" for h in sorted(spec.hours) for m in sorted(spec.minutes)])
    else:
        return quoted
    if spec.weekdays_restricted:
        days = [FULL_DAY_NAMES[d].capitalize() + "s" for d in sorted(spec.weekdays)]
        return f"on {_spoken_list(days)} {when}"
    if spec.days_restricted:
        return f"on day {_spoken_list([str(d) for d in sorted(spec.days)])} of each month {when}"
    return f"every day {when}" if when.startswith("at ") else when


def describe_schedule(expressions: list[str], timezone: str) -> str:
    """When a schedule fires, in words and in its time zone: ``every day at 02:00 (Europe/Amsterdam)``."""
    return f"{'; '.join(describe_cron(e) for e in expressions)} ({timezone})"
