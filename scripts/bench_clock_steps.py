"""Clock steps (issue 11): does an alarm escalate on time when the wall clock jumps?

A real `gateway run` process, under libfaketime for that process only, raises a smoke
alarm configured to escalate after `--escalate-s`; right after the raise its wall clock
is stepped (as NTP steps a Pi's clock after boot) by +1 h, -1 h or +1 year, and, in the
restart runs, the gateway is also killed (SIGKILL) and started again with the stepped
clock.  The figure is the time from the raise to the escalated document at a
subscriber, by this script's monotonic clock; the baseline is the same run without a
step.  Target: within 1 s of the configured time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.clock_steps import Escalation, escalation_across_step
from tests.peers import Mosquitto

RUNS = [("+0", False), ("+1h", False), ("-1h", False), ("+365d", False),
        ("+1h", True), ("-1h", True), ("+365d", True)]  # fmt: skip


def main() -> list[Escalation]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--escalate-s", type=float, default=30.0)
    args = parser.parse_args()
    results = []
    print(f"(C) clock steps: escalation configured at {args.escalate_s:g} s")
    with tempfile.TemporaryDirectory(prefix="gw-bench-clock-") as tmp:
        for n, (step, restart) in enumerate(RUNS):
            work = Path(tmp) / f"run-{n}"
            broker = Mosquitto(work / "broker", persistence=False)
            broker.start()
            try:
                run = escalation_across_step(
                    work, broker, step, escalate_s=args.escalate_s, restart=restart
                )
            finally:
                broker.kill()
            results.append(run)
            label = f"step {step:>6}" + (" + kill -9 and restart" if restart else "")
            base = "  (baseline)" if step == "+0" else ""
            verdict = "ok" if abs(run.error_s) < 1.0 else "LATE/EARLY"
            print(
                f"    {label:<36} escalated after {run.measured_s:7.2f} s"
                f" ({run.error_s:+.2f} s); gateway stamps {run.wall_gap_s:+.0f} s apart"
                f"  {verdict}{base}"
            )
    worst = max(abs(r.error_s) for r in results)
    print(f"    worst error {worst:.2f} s  [target < 1 s]")
    return results


if __name__ == "__main__":
    main()
