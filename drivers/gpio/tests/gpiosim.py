"""A simulated GPIO chip from the kernel's gpio-sim module, for the real libgpiod code path.

gpio-sim (CONFIG_GPIO_SIM, configfs) creates a real GPIO character device whose input
levels a test sets through sysfs: writing `pull-down` to a line's `pull` is a contact
to GND closing, and the kernel delivers the edge to whoever requested the line.  Only
the kernel is simulated; `GpiodSource` and libgpiod run exactly as on a Raspberry Pi.

Layout (Documentation/admin-guide/gpio/gpio-sim.rst):
/sys/kernel/config/gpio-sim/<device>/{live,dev_name}, <device>/<bank>/{num_lines,chip_name},
and /sys/devices/platform/<dev_name>/<chip_name>/sim_gpio<N>/{pull,value}.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from types import TracebackType

from tests.peers import wait_for

__all__ = ["CONFIGFS", "SimChip", "unavailable"]

CONFIGFS = Path("/sys/kernel/config/gpio-sim")


def unavailable() -> str | None:
    """Why no gpio-sim chip can be made here, or None when one can."""
    if not CONFIGFS.is_dir():
        return (
            "no gpio-sim in this kernel (no /sys/kernel/config/gpio-sim): on a kernel with "
            "CONFIG_GPIO_SIM run `sudo modprobe gpio-sim` (configfs mounted at "
            "/sys/kernel/config), then run these tests as root"
        )
    if os.geteuid() != 0:
        return "gpio-sim is here, but creating a chip needs root: run these tests as root"
    try:
        import gpiod  # noqa: F401
    except ImportError:
        return "the gpiod Python bindings (libgpiod v2) are not installed"
    return None


class SimChip:
    """One live gpio-sim chip with `num_lines` lines; removed again on exit."""

    def __init__(self, num_lines: int = 32) -> None:
        self.num_lines = num_lines
        self.device = CONFIGFS / f"community-gateway-{uuid.uuid4().hex[:8]}"
        self.bank = self.device / "bank0"
        self.path = ""  # /dev/gpiochipN, once live
        self._sysfs = Path()

    def __enter__(self) -> SimChip:
        self.device.mkdir()
        self.bank.mkdir()
        (self.bank / "num_lines").write_text(f"{self.num_lines}\n")
        (self.device / "live").write_text("1\n")
        chip_name = (self.bank / "chip_name").read_text().strip()
        dev_name = (self.device / "dev_name").read_text().strip()
        self.path = f"/dev/{chip_name}"
        self._sysfs = Path("/sys/devices/platform") / dev_name / chip_name
        if not wait_for(lambda: Path(self.path).exists(), timeout=5):
            self.__exit__(None, None, None)
            raise RuntimeError(f"gpio-sim made {chip_name}, but {self.path} did not appear")
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            (self.device / "live").write_text("0\n")
        for folder in (self.bank, self.device):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def set(self, offset: int, level: int) -> None:
        """What the outside world does to an input: pull it high (1) or low (0)."""
        pull = "pull-up" if level else "pull-down"
        (self._sysfs / f"sim_gpio{offset}" / "pull").write_text(f"{pull}\n")

    def value(self, offset: int) -> int:
        """The line's level now, as the chip sees it (an output: what was driven)."""
        return int((self._sysfs / f"sim_gpio{offset}" / "value").read_text().strip())
