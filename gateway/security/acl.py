"""Broker ACLs for a fleet: which topics each gateway and central service may use.

The rules come from the topic contract (protocol/community_protocol/topics.py, docs/mqtt-api.md) and are
written per identity, one block per gateway, never as `pattern` lines.  Mosquitto's
pattern substitution offers `%u` (user name) and `%c` (client id) as whole levels: a
gateway is two levels (site and gateway), so a pattern would need an id unique across
all sites, or a client id chosen by the client itself, and one mistake in the pattern
opens every gateway at once.  An explicit block names the gateway's own topics
literally; 500 gateways are 500 small blocks, which Mosquitto loads in milliseconds.

A gateway may publish only under its own subtree `{prefix}/{site}/{gateway}/#` and read
only its own commands, its own retained status (to repair a late last will), the
read-back topic of `gateway check`, and its own desired and reported configuration.  Replies to MQTT 5 requests go to the requester's
response topic, which therefore must lie under `{base}/reply/`.  Central services get
exactly what their role needs (`ROLES`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from community_protocol.topics import ANY, DEFAULT_PREFIX, CentralTopics, CommandPath, Topics
from gateway.sdk.model import Identity
from gateway.sdk.problems import Problem, YamlSyntaxError
from gateway.sdk.yamlsource import load_located

from .identity import broker_identity, check_service_name

__all__ = [
    "DEFAULT_PREFIX",
    "ROLES",
    "Fleet",
    "FleetError",
    "Rule",
    "gateway_rules",
    "load_fleet",
    "render_emqx",
    "render_mosquitto",
    "service_rules",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """One permission: `read` (subscribe and receive) or `write` (publish) on a filter."""

    access: str
    topic: str


def gateway_rules(prefix: str, site: str, gateway: str) -> list[Rule]:
    """Everything one gateway may do; nothing outside its own subtree."""
    t = Topics(prefix, Identity(site, gateway))
    return [
        Rule("write", t.everything),
        Rule("read", t.commands),
        Rule("read", t.status),  # its own retained status: a late last will is repaired
        Rule("read", t.check("#")),  # `gateway check` publishes and reads back here
        # Remote configuration (docs/fleet.md): the signed desired document, and its own
        # report, which a trial must see come back before it commits.
        Rule("read", t.config_desired),
        Rule("read", t.config_reported),
    ]


def _tickets(prefix: str) -> list[Rule]:
    every = Topics.fleet(prefix)
    ack = CommandPath.alarm_ack(ANY)
    return [
        Rule("read", every.alarm(ANY)),
        Rule("read", every.status),
        Rule("read", every.central_reply("#")),  # MQTT 5 response topics (CentralTopics)
        Rule("read", every.reply(ack)),  # replies of MQTT 3.1.1 gateways
        Rule("write", every.command(ack)),
        Rule("write", CentralTopics.ticket_topic(prefix, ANY)),
    ]


def _requests(prefix: str) -> list[Rule]:
    every = Topics.fleet(prefix)
    status = CommandPath.request_status(ANY)
    return [
        Rule("read", every.request(ANY)),
        Rule("read", every.central_reply("#")),
        Rule("read", every.reply(status)),
        Rule("write", every.command(status)),
    ]


def _fleet(prefix: str) -> list[Rule]:
    every = Topics.fleet(prefix)
    return [
        Rule("read", every.status),
        Rule("read", every.health),
        Rule("read", every.gateway_events),  # the `gateway.config` audit events
        Rule("read", every.config_reported),
        Rule("write", every.config_desired),
        # Software updates (`fleet update`): the command, the bundle's chunks over MQTT,
        # and the gateways' answers. Only a manifest signed by an update key installs.
        Rule("write", every.command(CommandPath.UPDATE)),
        Rule("write", every.command(CommandPath.UPDATE_CHUNK)),
        Rule("read", every.central_reply("#")),
        Rule("read", every.reply(CommandPath.UPDATE)),
        # Remote diagnostics (`fleet diag`): signed requests, answered on reply/diag/...
        Rule("write", every.command(f"{CommandPath.DIAG}/#")),
        Rule("read", every.reply(f"{CommandPath.DIAG}/#")),
    ]


# Central roles: the ticket service (gateway/tickets), a platform service that answers
# residents' kiosk requests with `cmd/requests/{code}/status`, and the fleet tool that
# pushes signed configurations (docs/fleet.md).
ROLES = {"tickets": _tickets, "requests": _requests, "fleet": _fleet}


def service_rules(prefix: str, role: str) -> list[Rule]:
    """Everything a central service of `role` may do."""
    return ROLES[role](prefix)


@dataclass(slots=True)
class Fleet:
    """The gateways and central services one broker serves, under one topic prefix."""

    prefix: str = DEFAULT_PREFIX
    gateways: list[Identity] = field(default_factory=list)
    services: dict[str, list[str]] = field(default_factory=dict)  # role -> names


class FleetError(ValueError):
    """The inventory cannot be used; `problems` has one line per fault, with where."""

    def __init__(self, problems: Sequence[Problem | str]) -> None:
        self.problems = [str(p) for p in problems]
        super().__init__("\n".join(self.problems))


def _check_prefix(prefix: str) -> str | None:
    if not prefix or any(c in prefix for c in "+#") or prefix[0] == "/" or prefix[-1] == "/":
        return "a topic prefix has no '+', '#', nor leading or trailing '/'"
    return None


def _from_csv(path: Path, text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    rows: list[tuple[int, str, str]] = []
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    for number, row in enumerate(reader, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["site", "gateway"]:
            continue  # the header
        if len(cells) != 2:
            problems.append(f"{path}:{number}: expected 'site,gateway', got {len(cells)} fields")
            continue
        rows.append((number, cells[0], cells[1]))
    return rows, problems


def load_fleet(path: Path) -> Fleet:
    """The fleet in a YAML inventory, or a CSV of `site,gateway` lines; FleetError if bad.

    YAML: `prefix:` (optional), `services: {tickets: [names], requests: [names],
    fleet: [names]}`
    (optional), `gateways: [{site: .., gateway: ..}, ...]`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError([f"{path}: cannot read it: {exc}"]) from exc
    fleet = Fleet()
    problems: list[Problem | str] = []
    entries: list[tuple[str, str, str]] = []  # where, site, gateway
    if path.suffix.lower() == ".csv":
        rows, bad = _from_csv(path, text)
        problems += bad
        entries = [(f"{path}:{n}", site, gw) for n, site, gw in rows]
    else:
        try:
            doc = load_located(path)
        except YamlSyntaxError as exc:
            raise FleetError([exc.problem]) from exc
        data = doc.data
        if not isinstance(data, dict):
            raise FleetError([doc.problem((), "expected a mapping with 'gateways:'")])
        for key in sorted(set(data) - {"prefix", "services", "gateways"}):
            problems.append(doc.problem((key,), "unknown key (prefix, services, gateways)"))
        prefix = data.get("prefix", DEFAULT_PREFIX)
        why = _check_prefix(prefix) if isinstance(prefix, str) else "must be a string"
        if why:
            problems.append(doc.problem(("prefix",), why))
        else:
            fleet.prefix = prefix
        services = data.get("services") or {}
        if not isinstance(services, dict):
            problems.append(doc.problem(("services",), "expected a mapping of role: [names]"))
            services = {}
        for role, names in services.items():
            if role not in ROLES:
                problems.append(
                    doc.problem(("services", role), f"unknown role; known: {', '.join(ROLES)}")
                )
                continue
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list):
                problems.append(doc.problem(("services", role), "expected a list of names"))
                continue
            for i, name in enumerate(names):
                try:
                    fleet.services.setdefault(role, []).append(check_service_name(str(name)))
                except ValueError as exc:
                    problems.append(doc.problem(("services", role, i), str(exc)))
        gateways = data.get("gateways")
        if not isinstance(gateways, list):
            problems.append(doc.problem(("gateways",), "expected a list of {site, gateway}"))
            gateways = []
        for i, item in enumerate(gateways):
            line = doc.line_of(("gateways", i))
            where = f"{path}:{line} gateways[{i}]" if line else f"{path} gateways[{i}]"
            if not isinstance(item, dict) or set(item) != {"site", "gateway"}:
                problems.append(doc.problem(("gateways", i), "expected {site: .., gateway: ..}"))
                continue
            entries.append((where, str(item["site"]), str(item["gateway"])))
    seen: dict[Identity, str] = {}
    for where, site, gateway in entries:
        try:
            ident = Identity(site, gateway)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if ident in seen:
            problems.append(
                f"{where}: {gateway} at {site} is listed twice (first at {seen[ident]})"
            )
            continue
        seen[ident] = where
        fleet.gateways.append(ident)
    if problems:
        raise FleetError(problems)
    return fleet


def _blocks(fleet: Fleet) -> Iterable[tuple[str, str, list[Rule]]]:
    """(comment, user name, rules) for every service, then every gateway."""
    for role, names in sorted(fleet.services.items()):
        for name in names:
            yield f"{role} service", name, service_rules(fleet.prefix, role)
    for g in fleet.gateways:
        name = broker_identity(g.site, g.gateway)
        yield (
            f"gateway {g.gateway} at site {g.site}",
            name,
            gateway_rules(fleet.prefix, g.site, g.gateway),
        )


def render_mosquitto(fleet: Fleet, source: str = "") -> str:
    """The text of a Mosquitto `acl_file` for the fleet (explicit `user` blocks only)."""
    lines = [
        f"# Written by `gateway security acl`{' from ' + source if source else ''}: "
        f"{len(fleet.gateways)} gateways, "
        f"{sum(len(v) for v in fleet.services.values())} services. Do not edit; regenerate.",
        "# No topic lines before the first user: anonymous clients get nothing.",
    ]
    for comment, name, rules in _blocks(fleet):
        lines += ["", f"# {comment}", f"user {name}"]
        lines += [f"topic {r.access} {r.topic}" for r in rules]
    return "\n".join(lines) + "\n"


def render_emqx(fleet: Fleet, source: str = "") -> str:
    """The same rules as an EMQX 5 file authorizer (`acl.conf`, Erlang terms)."""
    lines = [
        f"%% Written by `gateway security acl --format emqx`{' from ' + source if source else ''}.",
        "%% Everything not allowed here is denied (authorization.no_match = deny).",
    ]
    for comment, name, rules in _blocks(fleet):
        lines.append(f"%% {comment}")
        for r in rules:
            action = "subscribe" if r.access == "read" else "publish"
            lines.append(f'{{allow, {{username, "{name}"}}, {action}, ["{r.topic}"]}}.')
    lines.append("{deny, all}.")
    return "\n".join(lines) + "\n"
