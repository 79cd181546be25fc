"""A simulated meter's readings as a pure function of the wall-clock time.

The demand is the profile's hourly curve (straight lines between the hourly factors,
scaled so the daily mean is the profile's `mean`) plus a wobble: in each noise step of
w seconds, `amplitude x sin(2 pi tau / w)` with an amplitude drawn from the seed.  One
full sine integrates to zero, so the counter has a closed form:

    counter(t) = per_demand_hour x (integral of demand from installation to t) / 3600

It costs the same at any t, never goes backwards, agrees with the reported power
(energy is the integral of power), and continues where it was after a restart.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

from gateway.sdk.model import Reading, Unit, ValueType

from .noise import noise_after, prefix, salt, unit_interval
from .profile import Demand, Profile, ReadingSource, ReadingSpec

__all__ = ["EPOCH", "MeterModel"]

# Each simulated meter was "installed", its counter at zero, at some instant of the
# year after EPOCH (fixed by seed and device id), so counters look like a few years of
# use and two flats of the same size do not show the same counter.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_INSTALL_SPREAD_S = 365 * 86400.0
_EPOCH_S = EPOCH.timestamp()
_DAY = 86400.0
_HOUR = 3600.0
_TWO_PI = 2 * math.pi


# What readings() does for one reading, worked out once per profile.
_Step = tuple[str, ReadingSource, Unit, ValueType, int, float, str | None]


# Both tables depend on the profile alone: shared by its meters, not rebuilt for each
# (a meter model held 2.8 KB, now 0.6 KB: docs/benchmarks.md, issue 16).
@functools.cache
def _curve_tables(demand: Demand) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The hourly factors scaled to a daily mean of 1 (hour 24 = hour 0), and their
    running integral: cum[h] is the integral from midnight to the start of hour h."""
    norm = 24 / sum(demand.hourly)
    g = tuple(f * norm for f in (*demand.hourly, demand.hourly[0]))
    cum = [0.0]
    for h in range(24):
        cum.append(cum[-1] + (g[h] + g[h + 1]) / 2 * _HOUR)
    return g, tuple(cum)


@functools.cache
def _plan_of(readings: tuple[ReadingSpec, ...]) -> tuple[_Step, ...]:
    return tuple(
        (r.name, r.source, r.unit, r.value_type, r.digits, r.per_demand_hour or 0.0, r.divisor)
        for r in readings
    )


class MeterModel:
    """Demand and readings of one meter: a profile, a size, a seed and a device id."""

    __slots__ = (
        "_amp",
        "_cum",
        "_g",
        "_installed",
        "_mean",
        "_noise",
        "_offset_s",
        "_plan",
        "_steady",
        "_step",
        "profile",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        device_id: str,
        seed: int = 0,
        scale: float = 1.0,
        utc_offset_s: float = 0.0,
    ) -> None:
        self.profile = profile
        d = profile.demand
        self._g, self._cum = _curve_tables(d)
        self._mean = d.mean * scale
        self._amp = d.noise
        self._step = d.noise_step_s
        self._offset_s = utc_offset_s
        self._noise = prefix(seed, salt(device_id))
        self._steady = {
            r.name: (r.value or 0.0, r.noise, prefix(seed, salt(device_id), salt(r.name)))
            for r in profile.readings
            if r.source is ReadingSource.STEADY
        }
        install_x = unit_interval(seed, salt(device_id), salt("installed")) * _INSTALL_SPREAD_S
        self._installed = (install_x, self._integral(install_x))
        self._plan = _plan_of(profile.readings)

    @property
    def installed(self) -> datetime:
        """When this meter's counter was at zero."""
        return datetime.fromtimestamp(self._installed[0] + _EPOCH_S - self._offset_s, UTC)

    def _x(self, ts: datetime) -> float:
        return ts.timestamp() - _EPOCH_S + self._offset_s

    def _curve(self, x: float) -> float:
        day_s = x % _DAY
        h = min(int(day_s // _HOUR), 23)
        g0 = self._g[h]
        return g0 + (self._g[h + 1] - g0) * (day_s - h * _HOUR) / _HOUR

    def _curve_integral(self, x: float) -> float:
        days, day_s = divmod(x, _DAY)
        h = min(int(day_s // _HOUR), 23)
        s = day_s - h * _HOUR
        g0 = self._g[h]
        return days * self._cum[24] + self._cum[h] + g0 * s + (self._g[h + 1] - g0) * s * s / 7200

    def _wobble(self, x: float) -> tuple[float, float]:
        """The wobble at x, and its integral since the start of x's noise step."""
        if self._amp == 0:
            return 0.0, 0.0
        k = math.floor(x / self._step)
        start = k * self._step
        amp = self._amp * self._curve(start) * noise_after(self._noise, k)
        phase = _TWO_PI * (x - start) / self._step
        return amp * math.sin(phase), amp * self._step / _TWO_PI * (1 - math.cos(phase))

    def _integral(self, x: float) -> float:
        """Integral of curve and wobble from EPOCH to x, in factor-seconds."""
        return self._curve_integral(x) + self._wobble(x)[1]

    def _demand_at(self, x: float) -> tuple[float, float]:
        """Demand at x, and its integral since installation in demand-unit hours."""
        wobble, wobble_integral = self._wobble(x)
        demand = self._mean * (self._curve(x) + wobble)
        if x <= self._installed[0]:
            return demand, 0.0  # e.g. a gateway whose clock is not set yet: counters at zero
        integral = self._curve_integral(x) + wobble_integral - self._installed[1]
        return demand, self._mean * integral / _HOUR

    def demand(self, ts: datetime) -> float:
        """Instantaneous demand in the profile's unit (W, m³/h)."""
        return self._demand_at(self._x(ts))[0]

    def demand_hours(self, ts: datetime) -> float:
        """Integral of demand since installation, in demand-unit hours (Wh, m³); 0 before."""
        return self._demand_at(self._x(ts))[1]

    def readings(self, ts: datetime) -> tuple[Reading, ...]:
        """Every reading of the profile at `ts`, rounded as the meter reports it."""
        x = self._x(ts)
        demand, hours = self._demand_at(x)
        step = math.floor(x / self._step)
        steady = {
            name: value * (1 + amp * noise_after(state, step)) if amp else value
            for name, (value, amp, state) in self._steady.items()
        }
        out = []
        for name, source, unit, value_type, digits, per_hour, divisor in self._plan:
            if source is ReadingSource.DEMAND:
                value = demand
            elif source is ReadingSource.COUNTER:
                value = per_hour * hours
            elif source is ReadingSource.STEADY:
                value = steady[name]
            else:
                value = demand / steady[divisor or ""]
            out.append(Reading(name, round(value, digits), unit, value_type))
        return tuple(out)
