"""One poll of one meter: a read request per configured value, over a shared link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.dlt645.codec import Frame, Function, ParseError, build_read
from drivers.dlt645.link import NoReply, SerialLink
from drivers.dlt645.settings import Dlt645Settings
from drivers.dlt645.table import DataItem, Value, decode_reply, load_table

__all__ = ["GARBLED", "ItemResult", "PollResult", "fault_hint", "items_of", "poll_meter"]

# The start of the offline reason after corrupted replies: the meter answers, the line
# corrupts it (the same advice as the Modbus driver's `garbled` fault).
GARBLED = "garbled replies: check termination, shielding, parity"


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
    answered: bool  # at least one valid reply
    failure: str = ""  # the poll's first fault: no reply, garbled replies
    garbled: int = 0  # requests whose reply came back corrupted
    silent: int = 0  # requests left unanswered

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
    """Read each configured value in turn.

    Only silence to the first request ends the poll early: a meter that is off costs
    the bus one timeout, not one per value.  A reply garbled by the line (bad checksum,
    garbage), or silence later in the poll, costs that one value; the next data
    identifier is still asked for.  Raises PortError when the port itself fails, so
    the caller can reopen it.
    """
    address = settings.address
    results: list[ItemResult] = []
    answered = False
    garbled = silent = 0
    failure = ""
    items = items_of(settings)
    for n, item in enumerate(items):
        what = f"meter {address} to {item.name} ({item.di_text})"
        try:
            frame = await link.transact(
                build_read(address, item.di),
                _accepts(address, item),
                settings.timeout_s,
            )
        except NoReply as exc:
            if exc.garbled:
                garbled += 1
                error = f"garbled reply from {what}: {exc}"
            elif n == 0:
                failure = f"no reply from {what}: {exc}"
                rest = tuple(
                    ItemResult(i, error="not read: the meter stopped answering") for i in items
                )
                return PollResult(address, rest, answered, failure, silent=1)
            else:
                silent += 1
                error = f"no reply from {what}: {exc}"
            failure = failure or error
            results.append(ItemResult(item, error=error))
            continue
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
    if not answered and garbled:
        failure = f"{GARBLED} ({garbled} of {len(items)} replies corrupted; {failure})"
    return PollResult(address, tuple(results), answered, failure, garbled, silent)


def fault_hint(settings: Dlt645Settings, ever_answered: bool, *, garbled: bool = False) -> str:
    """What an installer should check when a meter does not answer, or answers garbled."""
    bus = settings.bus
    line = f"{bus.baud} 8{bus.parity}{bus.stopbits}"
    if garbled:
        return (
            f"the meter answers but its replies arrive corrupted: check 120 ohm termination "
            f"at both ends of the bus only, shielded twisted pair with short stubs, that the "
            f"meter talks {line} (parity), and that no second master polls {bus.port}"
        )
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
