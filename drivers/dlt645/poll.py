"""One poll of one meter: a read request per configured value, over a shared link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.dlt645.codec import Frame, Function, ParseError, build_read
from drivers.dlt645.link import NoReply, SerialLink
from drivers.dlt645.settings import Dlt645Settings
from drivers.dlt645.table import DataItem, Value, decode_reply, load_table

__all__ = ["ItemResult", "PollResult", "fault_hint", "items_of", "poll_meter"]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One value of a poll: decoded, or why not."""

    item: DataItem
    value: Value | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class PollResult:
    """Every configured value of one poll, and whether the meter answered at all."""

    address: str
    results: tuple[ItemResult, ...]
    answered: bool
    failure: str = ""  # why the poll stopped early: no reply, port gone

    @property
    def values(self) -> tuple[Value, ...]:
        return tuple(r.value for r in self.results if r.value is not None)


def items_of(settings: Dlt645Settings) -> tuple[DataItem, ...]:
    table = load_table()
    items = []
    for name in settings.readings:
        item = table.get(name)
        assert item is not None, f"{name} passed validation but is not in the table"
        items.append(item)
    return tuple(items)


def _accepts(address: str, item: DataItem) -> Callable[[Frame], bool]:
    di = item.di.to_bytes(4, "little")

    def accept(frame: Frame) -> bool:
        # The request's own echo (half-duplex adapters), a late reply to an earlier
        # request, or another meter's frame is not this reply.
        if not frame.is_reply or frame.address != address:
            return False
        if frame.function != Function.READ_DATA:
            return False
        return frame.is_abnormal or frame.data[:4] == di

    return accept


async def poll_meter(link: SerialLink, settings: Dlt645Settings) -> PollResult:
    """Read each configured value in turn; stop at the first request left unanswered.

    Raises LinkError when the port itself fails, so the caller can reopen it.
    """
    address = settings.address
    results: list[ItemResult] = []
    answered = False
    items = items_of(settings)
    for n, item in enumerate(items):
        try:
            frame = await link.transact(
                build_read(address, item.di),
                _accepts(address, item),
                settings.timeout_s,
            )
        except NoReply as exc:
            failure = f"no reply from meter {address} to {item.name} ({item.di_text}): {exc}"
            rest = tuple(
                ItemResult(i, error="not read: the meter stopped answering") for i in items[n:]
            )
            return PollResult(address, (*results, *rest), answered, failure)
        answered = True
        flags = frame.error()
        if flags is not None:
            results.append(
                ItemResult(
                    item, error=f"meter refused {item.name} ({item.di_text}): {flags.describe()}"
                )
            )
            continue
        try:
            results.append(ItemResult(item, value=decode_reply(item, frame.data)))
        except ParseError as exc:
            results.append(ItemResult(item, error=f"bad value for {item.name}: {exc}"))
    return PollResult(address, tuple(results), answered)


def fault_hint(settings: Dlt645Settings, ever_answered: bool) -> str:
    """What an installer should check when a meter does not answer."""
    bus = settings.bus
    line = f"{bus.baud} 8{bus.parity}{bus.stopbits}"
    if ever_answered:
        return (
            f"the meter answered before: check its power and the cable to it; "
            f"if no meter on {bus.port} answers, check the RS-485 adapter"
        )
    return (
        f"check that address {settings.address} matches the meter's label, that the meter "
        f"talks {line} on {bus.port}, the A/B wires (swap them if it never answered), "
        f"and the meter's power; `gateway scan dlt645 --port {bus.port}` with only this "
        f"meter connected prints its address"
    )
