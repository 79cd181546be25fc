"""Files an installer's tools can write: every one ends in clear problem lines, fast.

Windows encodings, alias bombs, duplicate keys, control characters, deep nesting, bad
dates, over-long values and paths, and `-c` naming a FIFO, a device or a folder.  Each
must give one line naming the file (and line) within a second: no traceback, no hang,
no memory growth.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.sdk.yamlsource import MAX_BYTES, MAX_DEPTH, MAX_VALUES
from tests.harness import GATEWAY
from tests.harness import config_problems as problems
from tests.test_config import GOOD  # a door on line 7-10, then a meter


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder the service user may enter (first boot reads the card as that user)."""
    work = Path(tempfile.mkdtemp(prefix="config-files-", dir="/tmp"))
    work.chmod(0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def write(tmp_path: Path, data: str | bytes, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(textwrap.dedent(data), encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def timed_problems(path: Path) -> list[str]:
    """The problems, found with at most a second of CPU (wall time: no hang either).

    CPU time, because the CI machine is shared: its wall clock measures the others.
    """
    start, cpu = time.monotonic(), time.process_time()
    found = problems(path)
    assert time.process_time() - cpu < 1.0, "a problem line takes at most a second"
    assert time.monotonic() - start < 10.0, "no waiting on anything"
    return found


# ---- encodings ------------------------------------------------------------------------


def test_one_latin1_byte_in_a_comment_names_byte_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"# caf\xe9\n" + GOOD.encode())
    assert timed_problems(path) == [
        f"{path}: not UTF-8 (byte 0xe9 at line 1, column 6); save it as UTF-8"
    ]


def test_a_gbk_file_is_not_utf8(tmp_path: Path) -> None:
    text = GOOD.replace("floor: 0, unit: lobby", "floor: 0, unit: 大堂")
    path = write(tmp_path, text.encode("gbk"))
    (found,) = timed_problems(path)
    assert found.startswith(f"{path}: not UTF-8 (byte 0xb4 at line 9, column ")
    assert found.endswith("); save it as UTF-8")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-16-le"])
def test_utf16_is_named_with_or_without_its_byte_order_mark(tmp_path: Path, codec: str) -> None:
    path = write(tmp_path, GOOD.encode(codec))
    (found,) = timed_problems(path)
    assert found.startswith(f"{path}: saved as UTF-16 (")
    assert found.endswith("save it as UTF-8")
    if codec == "utf-16":
        assert "byte order mark" in found


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode()))
    assert [d.id for d in loaded.devices] == ["door-1", "meter-101"]


@pytest.mark.parametrize("args", [["validate"], ["run"], ["check"]])
def test_commands_exit_2_with_the_encoding_line_and_no_traceback(
    tmp_path: Path, args: list[str]
) -> None:
    path = write(tmp_path, b"# caf\xe9\n" + GOOD.encode())
    result = subprocess.run(
        [GATEWAY, *args, "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert f"{path}: not UTF-8 (byte 0xe9 at line 1, column 6)" in result.stderr + result.stdout
    # 2 means "fix the config": systemd's RestartPreventExitStatus=2 stops the restarts.
    assert result.returncode == (1 if args == ["check"] else 2)


# ---- hostile or ambiguous YAML --------------------------------------------------------

BOMB = """\
version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

MERGE_BOMB = (
    "version: 1\nm0: &m0 {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7}\n"
    + "".join(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 8)}]}}\n" for i in range(1, 12))
)


@pytest.mark.parametrize("bomb", [BOMB, MERGE_BOMB], ids=["aliases", "merge keys"])
def test_an_alias_bomb_is_refused_before_it_grows(tmp_path: Path, bomb: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (found,) = timed_problems(write(tmp_path, bomb))
    assert "aliases (*name) expand it to more than" in found
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000, f"grew {grown_kib} KiB"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    (found,) = timed_problems(write(tmp_path, "version: 1\nloop: &l [1, *l]\n"))
    assert "nests deeper than" in found and "alias inside its own anchor" in found


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = GOOD + (
        "  - id: meter-1\n"
        "    kind: meter\n"
        '    location: {building: "1", unit: "101"}\n'
        "    driver: &elec {type: simulated, profile: household_electricity, scale: 2}\n"
        "  - id: meter-2\n"
        "    kind: meter\n"
        '    location: {building: "1", unit: "102"}\n'
        "    driver: {<<: *elec, scale: 0.5}\n"
    )
    loaded = load_config(write(tmp_path, text))
    scales = [getattr(d.settings, "scale", None) for d in loaded.devices[2:]]
    assert scales == [2, 0.5]  # the key written next to '<<' wins over the merged one


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace("gateway: {id: gw-1}", "gateway: {id: gw-1}\ngateway: {id: gw-2}").replace(
        "    kind: door\n", "    kind: door\n    kind: smoke\n"
    )
    path = write(tmp_path, text)
    assert timed_problems(path) == [
        f"{path}:4: key 'gateway' appears twice (first at line 3)",
        f"{path}:10 devices[0]: key 'kind' appears twice (first at line 9)",
    ]


def test_a_duplicate_key_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = GOOD.replace("url: mqtt://127.0.0.1:1883", "url: mqtt://127.0.0.1:1883\n  url: x")
    text = text.replace("kind: door", "kind: doorbell")
    found = timed_problems(write(tmp_path, text))
    assert [p.split(" ", 1)[1] for p in found] == [
        "broker: key 'url' appears twice (first at line 5)",
        "devices[0].kind: Input should be 'door', 'smoke', 'meter' or 'elderly_alarm'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("gw-1", "gw-\x001"), ":3: control character U+0000 at column 18"),
        (GOOD.replace("lobby", "lob\x07by"), ":9: control character U+0007 at column 50"),
        (
            GOOD.replace("{id: sunrise}", '{id: sunrise, name: "Sun\\x1brise"}'),
            ":2 site.name: control character U+001B",
        ),
    ],
    ids=["NUL", "BEL", "escaped ESC"],
)
def test_control_characters_are_refused_with_their_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (found,) = timed_problems(write(tmp_path, text))
    assert expected in found, found


def test_deep_nesting_is_refused_without_recursion(tmp_path: Path) -> None:
    for text in (
        "version: 1\nx: " + "[" * 1000 + "]" * 1000 + "\n",
        "version: 1\nx:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 1000)),
    ):
        (found,) = timed_problems(write(tmp_path, text))
        assert f"nested deeper than {MAX_DEPTH} levels" in found, found


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!timestamp 2024-13-45", "'2024-13-45' is not a valid date"),
        ("2024-02-30", "'2024-02-30' is not a valid date"),
        ("!!timestamp yesterday", "yesterday"),
        ("!!int 12abc", "12abc"),
        ("!!float 1.2.3", "'1.2.3' is not a valid float"),
        ("!python/object:os.system ls", "could not determine a constructor"),
        ("1" + "0" * 4400, "at most 4096"),
    ],
)
def test_values_that_are_not_what_they_say_name_their_line(
    tmp_path: Path, value: str, expected: str
) -> None:
    path = write(
        tmp_path,
        GOOD.replace("name: ", "").replace(
            "site: {id: sunrise}", f"site: {{id: sunrise, name: {value}}}"
        ),
    )
    found = timed_problems(path)
    assert any(f"{path}:2" in p and expected in p for p in found), found


def test_long_strings_and_paths_are_refused(tmp_path: Path) -> None:
    long_name = "x" * 300
    text = GOOD + f"outbox: {{path: /var/lib/{long_name}/outbox.db}}\n"
    text += f"clock: {{check: {'k' * 5000}}}\n"
    path = write(tmp_path, text)
    found = timed_problems(path)
    assert found == [
        f"{path}:16: a value of 5000 characters; at most 4096 (a path or a name is far shorter)"
    ]
    found = timed_problems(write(tmp_path, GOOD + f"outbox: {{path: /var/lib/{long_name}/o.db}}\n"))
    assert found == [f"{path}:15 outbox.path: a file or folder name in it is over 255 bytes"]


def test_a_10mb_comment_line_is_refused_by_size(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "# " + "x" * 10_000_000 + "\n")
    assert timed_problems(path) == [
        f"{path}: is larger than {MAX_BYTES // 1024} KiB; a config file is far smaller (wrong file?)"
    ]


@pytest.mark.parametrize("what", ["fifo", "dev-zero", "folder", "symlink to /dev/zero"])
def test_c_naming_no_regular_file_ends_at_once(tmp_path: Path, what: str) -> None:
    path = tmp_path / "site.yaml"
    if what == "fifo":
        os.mkfifo(path)  # nobody writes: opening it for reading would wait forever
        expected = "is a named pipe (FIFO), not a file"
    elif what == "folder":
        path.mkdir()
        expected = "is a folder, not a file"
    elif what == "dev-zero":
        path = Path("/dev/zero")
        expected = "is a device, not a file"
    else:
        path.symlink_to("/dev/zero")
        expected = "is a device, not a file"
    assert timed_problems(path) == [f"{path}: {expected}"]


def test_validate_on_a_fifo_exits_2_at_once(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    os.mkfifo(path)
    result = subprocess.run(
        [GATEWAY, "validate", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{path}: is a named pipe (FIFO), not a file" in result.stderr


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/nope.yaml: cannot read: No such file or directory"
    ]


def test_too_many_values_are_refused_while_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nx: [" + "1," * (MAX_VALUES + 10) + "1]\n")
    (found,) = timed_problems(path)
    assert found == f"{path}:2: more than {MAX_VALUES} values; a config is far smaller"


def test_first_boot_reports_the_encoding_line(open_tmp: Path) -> None:
    """First boot reads the card through the same loader: its report names the byte."""
    from tests.test_firstboot import GOOD as FIRSTBOOT_GOOD
    from tests.test_firstboot import firstboot, image, report_of

    root, folder = image(open_tmp, FIRSTBOOT_GOOD)
    config = folder / "gateway.yaml"
    config.write_bytes(b"# caf\xe9\n" + FIRSTBOOT_GOOD.encode())
    result = firstboot(root)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{config}: not UTF-8 (byte 0xe9 at line 1, column 6); save it as UTF-8" in report_of(
        folder
    )


@pytest.mark.parametrize("what", ["dev-zero", "binary", "huge", "fifo"])
def test_a_secret_file_that_is_no_secret_is_one_line(tmp_path: Path, what: str) -> None:
    secret = tmp_path / "pw"
    if what == "dev-zero":
        secret = Path("/dev/zero")  # read whole, it never ends
        expected = "secret file /dev/zero is not a regular file"
    elif what == "fifo":
        os.mkfifo(secret)
        expected = f"secret file {secret} is not a regular file"
    elif what == "binary":
        secret.write_bytes(b"\xff\xfe\x00pw")
        expected = f"cannot read secret file {secret}: {secret} is not UTF-8 text"
    else:
        secret.write_bytes(b"x" * 100_000)
        expected = f"cannot read secret file {secret}: {secret} is larger than 64 KiB"
    text = GOOD.replace(
        "url: mqtt://127.0.0.1:1883",
        f"url: mqtt://127.0.0.1:1883\n  username: gw\n  password: {{file: {secret}}}",
    )
    (found,) = timed_problems(write(tmp_path, text))
    assert found.startswith(f"{tmp_path}/site.yaml:7 broker.password.file: {expected}"), found


@pytest.mark.parametrize(
    "text",
    [
        BOMB,
        GOOD.replace("    kind: door\n", "    kind: door\n    kind: smoke\n"),
        "version: 1\nx: " + "[" * 1000 + "]" * 1000 + "\n",
        GOOD.replace("gw-1", "gw-\x001"),
        GOOD.replace("url: mqtt://127.0.0.1:1883", "url: http://broker\n  usrname: x"),
    ],
    ids=["alias bomb", "duplicate key", "deep", "NUL", "url and unknown key"],
)
def test_run_refuses_with_the_lines_validate_prints(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    out = {
        cmd: subprocess.run(
            [GATEWAY, cmd, "-c", str(path)], capture_output=True, text=True, timeout=30
        )
        for cmd in ("validate", "run")
    }
    assert out["validate"].returncode == out["run"].returncode == 2
    assert out["run"].stderr == out["validate"].stderr
    assert "Traceback" not in out["run"].stderr
