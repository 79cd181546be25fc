"""Times on the screens: the gateway's UTC timestamps in its local time zone, and their age.

The gateway stores and publishes UTC (`gateway.sdk.model.format_ts`); people in the office
read local time.  The zone is `web.timezone` (an IANA name) or the system's.  Pages keep
the UTC timestamp in the `datetime` and `title` attributes, so the exact instant is one
hover away and the console's script can update the age without asking the server.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.web.i18n import t
from gateway.web.settings import Lang

__all__ = ["ago", "load_zone", "local_time", "parse_ts", "system_zone", "zone_label"]

_LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"


def load_zone(name: str | None) -> tzinfo:
    """The zone `name` (IANA, e.g. Asia/Shanghai), or the system's when None."""
    return ZoneInfo(name) if name else system_zone()


def system_zone() -> tzinfo:
    """The system's time zone, by its IANA name when the system says it, else its offset.

    Looked up like the C library does: $TZ, then /etc/localtime (a link into the zoneinfo
    folder on Debian), then /etc/timezone.
    """
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if not name:
            continue
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    # No name to be found: the current offset (does not follow daylight saving).
    return datetime.now().astimezone().tzinfo or UTC


def zone_label(zone: tzinfo) -> str:
    """The zone as shown next to local times: its IANA name, or its abbreviation."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    return datetime.now(zone).tzname() or "UTC"


def parse_ts(text: str | None) -> datetime | None:
    """A gateway timestamp (`2026-11-27T04:00:00.123Z`) as an aware datetime; None if not one."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def local_time(text: str | None, zone: tzinfo, *, seconds: bool = True) -> str:
    """A gateway timestamp in local time, `2026-11-27 12:00:00`; the text as is if unparsable."""
    when = parse_ts(text)
    if when is None:
        return text or ""
    return when.astimezone(zone).strftime(_LOCAL_FORMAT if seconds else _LOCAL_FORMAT[:-3])


def ago(text: str | None, lang: Lang, now: datetime | None = None) -> str:
    """How long ago a timestamp was, in words ("3 min ago", "3分钟前"); "" if unparsable.

    The same steps as the console's script, which takes over once the page is loaded.
    """
    when = parse_ts(text)
    if when is None:
        return ""
    s = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    if s < 10:
        return t("ago_now", lang)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if s >= size:
            return t(f"ago_{unit}", lang).format(n=s // size)
    raise AssertionError("unreachable")
