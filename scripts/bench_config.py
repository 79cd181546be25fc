"""Benchmark: config validation time and memory, for shipped and hostile files (issue 12).

Prints, for each shipped config, the median time of `load_config` and of a plain
`yaml.safe_load` of the same file (the baseline: parsing alone, what most tools do);
and for each hostile file (alias bomb, merge-key bomb, 1 MiB of values, 1,000-deep
nesting, a 10 MB comment), the time until the problem line and the peak memory of a
fresh process doing only that, against a process that only imports the gateway.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gateway.config import load_config
from gateway.sdk.registry import available_drivers

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import resource, sys, time
from pathlib import Path
from gateway.config import ConfigError, load_config
from gateway.sdk.registry import available_drivers
drivers = available_drivers()  # imports every driver: not part of the figure
start, cpu = time.monotonic(), time.process_time()
if sys.argv[1] != "-":
    try:
        load_config(Path(sys.argv[1]), drivers)
    except ConfigError as exc:
        print(exc.problems[0], file=sys.stderr)
took, cpu = time.monotonic() - start, time.process_time() - cpu
print(f"{took:.3f} {cpu:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def _hostile(folder: Path) -> dict[str, Path]:
    files = {
        "alias bomb (9 levels of 9)": "version: 1\na0: &a0 ["
        + ",".join(['"lol"'] * 9)
        + "]\n"
        + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
        "merge-key bomb (11 levels of 8)": "version: 1\nm0: &m0 {k0: 0, k1: 1, k2: 2}\n"
        + "".join(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 8)}]}}\n" for i in range(1, 12)),
        "1 MiB of values": "version: 1\nx: [" + "1," * 500_000 + "1]\n",
        "49,000 values (under the limit)": "version: 1\nx: [" + "1," * 49_000 + "1]\n",
        "1,000-deep nesting": "version: 1\nx: " + "[" * 1000 + "]" * 1000 + "\n",
        "10 MB comment line": "version: 1\n# " + "x" * 10_000_000 + "\n",
    }
    out = {}
    for i, (name, text) in enumerate(files.items()):
        path = folder / f"hostile-{i}.yaml"
        path.write_text(text)
        out[name] = path
    return out


def _child(path: Path | None) -> tuple[float, float, int]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path) if path else "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    took, cpu, rss = result.stdout.split()
    return float(took), float(cpu), int(rss)


def main() -> None:
    drivers = available_drivers()
    print("config validation (median of 20 runs, ms)   load_config   yaml.safe_load (baseline)")
    print(f"  (load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    shipped = [ROOT / "config/demo.yaml", *sorted(ROOT.glob("drivers/*/sample.yaml"))]
    for path in shipped:
        ours, base = [], []
        for _ in range(20):
            start = time.perf_counter()
            load_config(path, drivers)  # the shipped files are valid
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            yaml.safe_load(path.read_text("utf-8"))
            base.append(time.perf_counter() - start)
        name = str(path.relative_to(ROOT))
        print(
            f"  {name:40s} {statistics.median(ours) * 1000:8.1f}"
            f"   {statistics.median(base) * 1000:8.1f}"
        )
    _, _, base_rss = _child(None)
    print(f"\nhostile files (fresh process; importing the gateway alone: {base_rss // 1024} MiB)")
    print("  file                               to the problem line (wall, CPU)   peak memory")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _hostile(Path(tmp)).items():
            took, cpu, rss = _child(path)
            print(f"  {name:36s} {took * 1000:8.0f} ms {cpu * 1000:8.0f} ms   {rss // 1024:8d} MiB")


if __name__ == "__main__":
    main()
