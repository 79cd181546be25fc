"""YAML loading that remembers the line of every key, so errors can name it.

Config files come from installers' laptops and from a FAT boot partition, so nothing in
them is trusted.  Before any Python object is built the file must be: a regular file of
at most `MAX_BYTES` (a FIFO, a device or a folder is refused without blocking on it),
UTF-8 (a Windows UTF-16 or GBK file is named as such), free of control characters, at
most `MAX_DEPTH` levels deep, and, with its aliases followed, at most `MAX_VALUES`
values (an alias bomb is refused before it is expanded).  A key written twice in one
mapping is a problem (a copied block must not silently read the wrong meter); a merge
key (`<<: *anchor`) may be overridden, as YAML intends.

Shared by the gateway (config, profiles, ACL) and the central side (routes, fleet
configs); needs PyYAML, the `files` extra.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .problems import Located, Path_, Problem, YamlSyntaxError, format_path

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_SCALAR",
    "MAX_VALUES",
    "decode_text",
    "load_located",
    "read_limited",
]

# A large building's config is a few hundred devices, under 200 KiB.
MAX_BYTES = 1 << 20
# The deepest shipped config nests 7 levels; the YAML composer recurses per level.
MAX_DEPTH = 32
# Values in the file, and with aliases followed: bounds the work and memory of
# everything after parsing (about 20 us a value).  A device takes 25-40 values (keys
# count), so this is over 1,000 devices: more than one plant-room box serves.
MAX_VALUES = 50_000
# A path is at most 4096 bytes on Linux; no setting needs a longer value.
MAX_SCALAR = 4096

# YAML 1.1 printable characters; anything else (NUL, BEL, ESC, DEL, C1) is refused.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

try:  # libyaml: the parser in C, 10-20x faster; the PyPI wheels ship it
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - pyyaml built without libyaml
    _Loader = yaml.SafeLoader

_MERGE_TAG = "tag:yaml.org,2002:merge"


# ---- bytes -> text -------------------------------------------------------------------


def _refuse(file: str, message: str) -> YamlSyntaxError:
    return YamlSyntaxError(Problem(file, None, "", message))


def _kind_of(mode: int) -> str | None:
    """Why a file of this mode is no config file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def read_limited(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; YamlSyntaxError otherwise.

    Never blocks: the type is checked before opening (opening a serial port toggles its
    lines, a FIFO waits for a writer) and again on the open file, which is opened
    non-blocking in case it was swapped in between.  OSError is left to the caller.
    """
    file = str(path)
    why = _kind_of(os.stat(path).st_mode)
    if why is not None:
        raise _refuse(file, why)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        why = _kind_of(st.st_mode)
        if why is not None:
            raise _refuse(file, why)
        too_big = _refuse(
            file, f"is larger than {limit // 1024} KiB; a config file is far smaller (wrong file?)"
        )
        if st.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # grew while being read
            raise too_big
        return b"".join(chunks)
    finally:
        os.close(fd)


def _line_col(text_before: str) -> tuple[int, int]:
    line = text_before.count("\n") + 1
    return line, len(text_before) - (text_before.rfind("\n") + 1) + 1


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 text of a config file's bytes; YamlSyntaxError naming the encoding otherwise."""
    for bom, name in (
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\x00\x00\xfe\xff", "UTF-32"),
        (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"),
    ):
        if data.startswith(bom):
            raise _refuse(
                file,
                f"saved as {name} (it starts with a {name} byte order mark); save it as UTF-8",
            )
    data = data.removeprefix(b"\xef\xbb\xbf")
    head = data[:512]
    if len(head) >= 4 and head.count(0) * 4 >= len(head):
        # ASCII text in UTF-16 without a byte order mark: a NUL beside every letter.
        raise _refuse(file, "saved as UTF-16 (a NUL byte beside every letter); save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", errors="replace")
        line, col = _line_col(before)
        raise _refuse(
            file,
            f"not UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, column {col}); "
            "save it as UTF-8",
        ) from None
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, col = _line_col(text[: bad.start()])
        raise YamlSyntaxError(
            Problem(
                file,
                line,
                "",
                f"control character U+{ord(bad.group()):04X} at column {col}; remove it "
                "(a YAML file holds printable text, tabs and line breaks only)",
            )
        )
    return text


# ---- text -> nodes -------------------------------------------------------------------


def _events(text: str) -> Iterator[yaml.Event]:
    loader = _Loader(text)
    try:
        while loader.check_event():
            yield loader.get_event()
    finally:
        loader.dispose()


def _prescan(text: str, file: str) -> list[Problem]:
    """Depth and value-length problems, found on the event stream (no recursion, no objects)."""
    problems: list[Problem] = []
    depth = 0
    values = 0
    for event in _events(text):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            values += 1  # as _expansion_problem counts nodes
            if values > MAX_VALUES:
                problems.append(
                    Problem(
                        file, line, "", f"more than {MAX_VALUES} values; a config is far smaller"
                    )
                )
                break
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                problems.append(
                    Problem(file, line, "", f"nested deeper than {MAX_DEPTH} levels; flatten it")
                )
                break  # one line is enough; the rest is deeper still
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR:
            problems.append(
                Problem(
                    file,
                    line,
                    "",
                    f"a value of {len(event.value)} characters; at most {MAX_SCALAR} "
                    "(a path or a name is far shorter)",
                )
            )
    return problems


def _expansion_problem(root: yaml.Node, file: str) -> Problem | None:
    """Refuse a document whose aliases expand it past MAX_VALUES or MAX_DEPTH (or in a loop)."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return Problem(
                file,
                None,
                "",
                f"its aliases (*name) expand it to more than {MAX_VALUES} values; "
                "use fewer aliases",
            )
        if depth > MAX_DEPTH:
            return Problem(
                file,
                node.start_mark.line + 1,
                "",
                f"with its aliases (*name) followed it nests deeper than {MAX_DEPTH} levels "
                "(an alias inside its own anchor?)",
            )
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)
    return None


# ---- nodes -> objects ----------------------------------------------------------------


class _Builder:
    """Builds plain dicts, lists and scalars from nodes, recording lines and problems."""

    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []

    def _problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.problems.append(
            Problem(self.file, node.start_mark.line + 1, format_path(path), message)
        )

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path_) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self._problem(node, path, f"{problem} (quote the value if it is text)")
        except Exception as exc:  # pyyaml's constructors raise anything on odd input
            # A date like 2024-02-30, a !!timestamp or !!int that is not one.
            self._problem(
                node,
                path,
                f"{node.value!r} is not a valid {_tag_name(node)}: {exc}; quote it if it is text",
            )
        else:
            bad = _NOT_PRINTABLE.search(value) if isinstance(value, str) else None
            if bad is None:
                return value
            self._problem(
                node,
                path,
                f"control character U+{ord(bad.group()):04X} in the value (an escape such "
                "as \\0 or \\x07 in quotes); remove it",
            )
        # Reported already; as written, the value lets the other checks go on.
        return node.value

    def _key(self, node: yaml.Node, path: Path_) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self._problem(node, path, "a key must be a plain word, not a list or mapping")
            return None
        key = self._scalar(node, path)
        return key if isinstance(key, str | int | float | bool) else str(key)

    def _merged(self, node: yaml.Node, path: Path_) -> dict[Any, Any]:
        # `<<: *anchor` or `<<: [*a, *b]`: the earlier mapping wins, as YAML specifies.
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        result: dict[Any, Any] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._problem(source, path, "'<<' merges a mapping or a list of mappings")
                continue
            for key, value in self._mapping(source, path).items():
                result.setdefault(key, value)
        return result

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE_TAG:
                result.update(self._merged(value_node, path))
            else:
                own.append((key_node, value_node))
        for key_node, value_node in own:
            key = self._key(key_node, path)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                self._problem(
                    key_node,
                    path,
                    f"key {key!r} appears twice (first at line {first_line[key]})",
                )
                continue  # keep the first: the one an installer reads top-down
            first_line[key] = line
            sub = (*path, key)
            self.lines[sub] = line
            result[key] = self.build(value_node, sub)
        return result


def _tag_name(node: yaml.Node) -> str:
    tag = str(node.tag)
    return "date" if tag.endswith(":timestamp") else tag.rsplit(":", 1)[-1]


def _mark_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    detail = getattr(exc, "problem", None) or str(exc)
    if "maximum nesting depth" in detail:  # libyaml's own limit, met while scanning ahead
        return Problem(file, line, "", f"nested deeper than {MAX_DEPTH} levels; flatten it")
    return Problem(file, line, "", f"not valid YAML: {detail}")


def load_located(path: Path, *, collect: bool = False) -> Located:
    """Parse a YAML file; raises YamlSyntaxError with file and line for what stops reading it.

    Problems that leave the document readable (a duplicate key, a bad date) are raised
    too, unless `collect` is true: then they come back in `Located.problems`, so the
    caller can report them together with its own.  OSError (missing, unreadable) is
    the caller's to report.
    """
    file = str(path)
    text = decode_text(read_limited(path), file)
    try:
        problems = _prescan(text, file)
        if problems:
            raise YamlSyntaxError(problems)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return Located(file, {})
            too_big = _expansion_problem(node, file)
            if too_big is not None:
                raise YamlSyntaxError(too_big)
            builder = _Builder(file, loader)
            data = builder.build(node, ())
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_mark_problem(file, exc)) from exc
    except RecursionError as exc:  # prescan bounds the depth; this is a last guard
        raise YamlSyntaxError(Problem(file, None, "", "nested too deeply")) from exc
    if builder.problems and not collect:
        raise YamlSyntaxError(builder.problems)
    return Located(file, data, builder.lines, builder.problems)
