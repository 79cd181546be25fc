"""A seeded mutator over every shipped config: no traceback, no slow case, run refuses too.

Each case takes one of the shipped configs (config/*.yaml, drivers/*/sample.yaml) and
applies a few random edits an installer's editor or a damaged card could make: lines
deleted, doubled, swapped or re-indented; characters inserted (control characters,
YAML indicators, non-ASCII); values replaced by hostile ones (aliases, tags, huge
numbers, bad dates, long strings, odd paths); keys renamed, dropped or added in the
parsed tree; the file cut short or re-encoded.  The validator runs in-process.

Done when (issue 12): 0 tracebacks, 0 cases over 2 s, and `run` refuses whatever
`validate` refuses (a conflict between devices is refused by validate and leaves, in
run, exactly those devices unstarted).  FUZZ_CASES sets the number of cases
(default 2,000); FUZZ_SEED the first seed.
"""

from __future__ import annotations

import copy
import functools
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.sdk.driver import DriverInfo
from gateway.sdk.registry import available_drivers
from tests.certs import issue

ROOT = Path(__file__).resolve().parents[1]
CASES = int(os.environ.get("FUZZ_CASES", "2000"))
FIRST_SEED = int(os.environ.get("FUZZ_SEED", "0"))
SLOW_S = 2.0
ETC = "/etc/community-gateway/"

CHARS = [
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\ufeff", "\u202e", "\t", "\r", "\n", ":", "-",
    "[", "]", "{", "}", ",", "&", "*", "!", "|", ">", "#", "%", "@", "`", '"', "'", "\\",
    "?", "é", "大", "\U0001f525", " ",
]  # fmt: skip
VALUES = [
    "", "~", "null", "-1", "0", "1e309", "-.inf", ".nan", "99999999999999999999999999",
    "1" + "0" * 5000, "0x1F", "0o17", "12:30:45", "yes", "no", "on", "[]", "{}", "[[[[1]]]]",
    "!!timestamp 2024-13-45", "2024-02-30", "!!int x", "!!float 1.2.3", "!!binary aGk=",
    "!!set {a, b}", "!!omap [a: 1]", "!python/object:os.system ls", "!custom x", "*nope",
    "&a x", "\"\\x00\"", "'\\u202e'", '"\\e"', "x" * 5000, "/dev/zero", "/proc/self/mem",
    "../../../../etc/shadow", "/" + "d" * 300 + "/f", "ü" * 100, "{file: /dev/zero}",
    "{file: ''}", "{env: ''}", "{file: x, env: y}", "mqtts://[::1", "mqtt://h:99999",
    "mqtts://user:pw@h", "-3.5", "3.5", "true", "[1, 2, 3]", "{a: 1}", "0000012345678",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Seed:
    """A shipped config as a starting point: its name, text, and the folder it lives in."""

    name: str
    text: str


def _seeds(site: Path) -> list[Seed]:
    seeds = [Seed("demo.yaml", (ROOT / "config/demo.yaml").read_text("utf-8"))]
    example = (ROOT / "config/example-building.yaml").read_text("utf-8")
    seeds.append(Seed("example-building.yaml", example.replace(ETC, f"{site}/")))
    for sample in sorted(ROOT.glob("drivers/*/sample.yaml")):
        seeds.append(Seed(f"{sample.parent.name}.yaml", sample.read_text("utf-8")))
    return seeds


def _example_secrets(site: Path) -> None:
    """The files config/example-building.yaml names, so its deeper checks run too."""
    ca = issue("Platform CA", ca=True)
    web = issue("gateway.local", issuer=ca)
    files = {
        "broker.password": b"x\n",
        "platform-ca.pem": ca.cert,
        "influx.token": b"t\n",
        "osdp-reader-3-lobby.scbk": b"00112233445566778899aabbccddeeff\n",
        "osdp-site.secret": b"a-site-secret-of-enough-bytes-0123\n",
        "osdp-allow-lobby.txt": b"c-5CXCB6IWFD6QRN7YN3UIE2M5\n",
        "web.crt": web.cert,
        "web.key": web.key,
    }
    for name, data in files.items():
        (site / name).write_bytes(data)


# ---- mutations ------------------------------------------------------------------------

Text = list[str]


def _delete_line(r: random.Random, lines: Text) -> None:
    if lines:
        del lines[r.randrange(len(lines))]


def _double_line(r: random.Random, lines: Text) -> None:
    if lines:
        i = r.randrange(len(lines))
        lines.insert(i + r.randint(0, 3), lines[i])


def _swap_lines(r: random.Random, lines: Text) -> None:
    if len(lines) > 1:
        i, j = r.randrange(len(lines)), r.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]


def _indent(r: random.Random, lines: Text) -> None:
    if lines:
        i = r.randrange(len(lines))
        lines[i] = lines[i][2:] if r.random() < 0.5 else "  " + lines[i]


def _insert_char(r: random.Random, lines: Text) -> None:
    if lines:
        i = r.randrange(len(lines))
        at = r.randint(0, len(lines[i]))
        lines[i] = lines[i][:at] + r.choice(CHARS) + lines[i][at:]


def _delete_char(r: random.Random, lines: Text) -> None:
    if lines:
        i = r.randrange(len(lines))
        if lines[i]:
            at = r.randrange(len(lines[i]))
            lines[i] = lines[i][:at] + lines[i][at + 1 :]


def _replace_value(r: random.Random, lines: Text) -> None:
    candidates = [i for i, line in enumerate(lines) if ": " in line]
    if candidates:
        i = r.choice(candidates)
        key, _, _ = lines[i].partition(": ")
        lines[i] = f"{key}: {r.choice(VALUES)}"


def _alias_block(r: random.Random, lines: Text) -> None:
    width = r.randint(2, 9)
    block = ["zz0: &z0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, r.randint(2, 12)):
        block.append(f"zz{level}: &z{level} [" + ", ".join([f"*z{level - 1}"] * width) + "]")
    lines[r.randint(0, len(lines)) : 0] = block


TEXT_MUTATIONS: list[Callable[[random.Random, Text], None]] = [
    _delete_line, _double_line, _swap_lines, _indent, _insert_char, _insert_char,
    _delete_char, _replace_value, _replace_value, _alias_block,
]  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _mutate_tree(r: random.Random, doc: Any) -> Any:
    """Edit the parsed document: it stays YAML, so the deeper checks see the change."""
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return doc
    path = r.choice(paths)
    parent = _get(doc, path[:-1])
    key = path[-1]
    action = r.randrange(6)
    if action == 0:
        del parent[key]
    elif action == 1:
        parent[key] = yaml.load(r.choice(VALUES[:20]), Loader=_Loader)
    elif action == 2 and isinstance(parent, dict):
        parent[f"{key}x"] = parent.pop(key)  # a misspelt key
    elif action == 3 and isinstance(parent, list):
        parent.append(parent[key])  # a copied device, id and address and all
    elif action == 4:
        parent[key] = r.choice([None, 0, -1, 2**70, "", "x" * 300, [], {}, True, 1.5])
    elif isinstance(parent, dict) and isinstance(parent[key], dict) and parent[key]:
        other = r.choice(list(parent[key]))
        parent[key][other] = r.choice(list(parent[key].values()))
    return doc


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@functools.cache
def _parsed_once(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _parsed(text: str) -> Any:
    return copy.deepcopy(_parsed_once(text))


def mutant(seed: Seed, case: int) -> bytes:
    """The bytes of fuzz case `case` made from `seed` (deterministic)."""
    r = random.Random(case)
    text = seed.text
    if r.random() < 0.5:
        try:
            doc = _parsed(text)
            for _ in range(r.randint(1, 3)):
                doc = _mutate_tree(r, doc)
            text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
            pass
    lines = text.split("\n")
    for _ in range(r.randint(0 if text != seed.text else 1, 4)):
        r.choice(TEXT_MUTATIONS)(r, lines)
    text = "\n".join(lines)
    roll = r.random()
    if roll < 0.03:
        text = text[: r.randrange(len(text) + 1)]
    if roll > 0.98:
        return text.encode(r.choice(["utf-16", "utf-16-le", "gbk", "latin-1"]), errors="replace")
    data = text.encode("utf-8", errors="surrogatepass")
    if 0.97 < roll <= 0.98 and data:
        at = r.randrange(len(data))
        data = data[:at] + bytes([r.randrange(0x80, 0x100)]) + data[at:]
    return data


# ---- the oracle -----------------------------------------------------------------------


def check_case(path: Path, drivers: dict[str, DriverInfo]) -> str | None:
    """What is wrong with how the validator treated this file, or None."""
    try:
        try:
            as_run = load_config(path, drivers, allow_conflicts=True)
        except ConfigError:
            return None  # run refuses: so does validate (it refuses a superset)
        try:
            load_config(path, drivers)
        except ConfigError as exc:
            refused = [str(p) for p in exc.problems]
            conflicts = [str(p) for p in as_run.conflicts]
            if sorted(refused) != sorted(conflicts):
                return (
                    f"run accepts what validate refuses:\n{refused}\nrun's conflicts: {conflicts}"
                )
            return None
        if as_run.conflicts:
            return f"validate accepts conflicts run reports: {as_run.conflicts}"
        return None
    except Exception:
        return traceback.format_exc()


def test_mutated_configs_give_problem_lines_only(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _example_secrets(site)
    seeds = _seeds(site)
    drivers = available_drivers()
    failures: list[str] = []
    slow: list[tuple[float, str]] = []
    worst = 0.0
    for case in range(FIRST_SEED, FIRST_SEED + CASES):
        seed = seeds[case % len(seeds)]
        path = site / seed.name  # relative paths resolve beside the secrets
        path.write_bytes(mutant(seed, case))
        # CPU time: the CI machine is shared, and its wall clock measures the others.
        start = time.process_time()
        wrong = check_case(path, drivers)
        took = time.process_time() - start
        worst = max(worst, took)
        label = f"case {case} ({seed.name}; FUZZ_SEED={case} FUZZ_CASES=1)"
        if took > SLOW_S:
            slow.append((took, label))
        if wrong is not None:
            keep = tmp_path / f"case-{case}-{seed.name}"
            keep.write_bytes(path.read_bytes())
            failures.append(f"{label}, kept as {keep}:\n{wrong}")
    assert not failures, f"{len(failures)} of {CASES} cases:\n\n" + "\n\n".join(failures[:5])
    assert not slow, f"cases over {SLOW_S} s (worst {worst:.2f} s): {sorted(slow)[-5:]}"


@pytest.mark.parametrize("case", range(3))
def test_the_mutator_is_deterministic_and_changes_the_file(case: int, tmp_path: Path) -> None:
    seeds = _seeds(tmp_path)
    seed = seeds[case]
    assert mutant(seed, case) == mutant(seed, case)
    assert mutant(seed, case) != seed.text.encode()
