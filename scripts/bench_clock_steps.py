"""Clock steps (issue 11): does an alarm escalate on time when the wall clock jumps?

A real `gateway run` process, under libfaketime for that process only, raises a smoke
alarm configured to escalate after `--escalate-s`; right after the raise its wall clock
is stepped (as NTP steps a Pi's clock after boot) by +1 h, -1 h or +1 year, and, in the
restart runs, the gateway is also killed (SIGKILL) and started again with the stepped
clock.  The figure is the time from the raise to the escalated document at a
subscriber, by this script's monotonic clock; the baseline is the same run without a
step.  The same for the inactivity check of a flat (`elderly.inactivity` after a window of
`--escalate-s` without motion, the clock stepped right after the last motion).  Target:
within 1 s of the configured time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.clock_steps import escalation_across_step, inactivity_across_step
from tests.peers import Mosquitto

RUNS = [("+0", False), ("+1h", False), ("-1h", False), ("+365d", False),
        ("+1h", True), ("-1h", True), ("+365d", True)]  # fmt: skip


def _broker(work: Path) -> Mosquitto:
    broker = Mosquitto(work / "broker", persistence=False)
    broker.start()
    return broker


def main() -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--escalate-s", type=float, default=30.0)
    args = parser.parse_args()
    results = []
    print(f"(C) clock steps: escalation configured at {args.escalate_s:g} s")
    with tempfile.TemporaryDirectory(prefix="gw-bench-clock-") as tmp:
        for n, (step, restart) in enumerate(RUNS):
            work = Path(tmp) / f"run-{n}"
            broker = _broker(work)
            try:
                run = escalation_across_step(
                    work, broker, step, escalate_s=args.escalate_s, restart=restart
                )
            finally:
                broker.kill()
            results.append(run.error_s)
            label = f"step {step:>6}" + (" + kill -9 and restart" if restart else "")
            base = "  (baseline)" if step == "+0" else ""
            verdict = "ok" if abs(run.error_s) < 1.0 else "LATE/EARLY"
            print(
                f"    {label:<36} escalated after {run.measured_s:7.2f} s"
                f" ({run.error_s:+.2f} s); gateway stamps {run.wall_gap_s:+.0f} s apart"
                f"  {verdict}{base}"
            )
        print(f"    inactivity window of {args.escalate_s:g} s:")
        for step in ("+0", "+365d", "-1h"):
            work = Path(tmp) / f"wellness{step}"
            broker = _broker(work)
            try:
                waited = inactivity_across_step(work, broker, step, window_s=args.escalate_s)
            finally:
                broker.kill()
            error = waited - args.escalate_s
            results.append(error)
            base = "  (baseline)" if step == "+0" else ""
            verdict = "ok" if abs(error) < 1.0 else "LATE/EARLY"
            print(
                f"    step {step:>6}{'':<29} raised after {waited:7.2f} s ({error:+.2f} s)"
                f"  {verdict}{base}"
            )
    worst = max(abs(e) for e in results)
    print(f"    worst error {worst:.2f} s  [target < 1 s]")
    return results


if __name__ == "__main__":
    main()
