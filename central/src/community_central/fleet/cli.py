"""`community-central fleet`: list gateways, push a configuration, roll it or an update out, audit.

The issue calls it `gateway fleet`; it is central's (the platform team runs it, not a
gateway), so it is a subcommand of `community-central` like `serve` and `list`.
Signing keys are files (`--key`), never values on the command line.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from community_protocol.chunks import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from community_protocol.ed25519 import generate_key, load_private_key

from ..options import broker_options, broker_settings
from ..yamlfile import ConfigError
from .api import Fleet, audit_trail
from .audit import AuditError
from .desired import load_config_file
from .inventory import Selector
from .link import LinkError
from .show import audit_line, outcome_line, print_rollout, view_line

__all__ = ["fleet"]

_File = click.Path(path_type=Path, dir_okay=False, exists=True)


def _selector(values: tuple[str, ...], *, required: bool) -> Selector | None:
    if not values and not required:
        return None
    try:
        return Selector.parse(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SITE/GATEWAY") from exc


def _link_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A broker or database that cannot be used ends the command with one line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (LinkError, LookupError, AuditError) as exc:
            raise click.ClickException(str(exc).strip("'\"")) from exc

    return wrapper


db_option = click.option(
    "--db",
    "db",
    default=None,
    help="The audit database: a SQLite file or a postgresql:// URL (the tickets' database will do).",
)


@click.group()
def fleet() -> None:
    """Remote configuration, updates and diagnostics of the gateways: list, push, rollout, update, audit, diag."""


@fleet.command("list")
@broker_options
@click.argument("targets", nargs=-1)
@click.option(
    "--listen",
    type=click.FloatRange(min=0.2, max=600),
    default=2.0,
    show_default=True,
    help="Seconds to collect documents (health is not retained: it shows if one arrives).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_link_errors
def list_(targets: tuple[str, ...], listen: float, as_json: bool, **kw: Any) -> None:
    """Gateways (all, or those matching SITE/GATEWAY globs) with status, versions, outbox, last seen."""
    selector = _selector(targets, required=False)
    views = Fleet(broker_settings(kw)).gateways(selector, listen_s=listen)
    if as_json:
        for v in views:
            click.echo(json.dumps(v.row(), ensure_ascii=False))
        return
    if not views:
        click.echo("no gateways")
        return
    click.echo(
        f"{'GATEWAY':32} {'STATE':8} {'SOFTWARE':10} {'CONFIG':>6} {'LAST RESULT':16} {'OUTBOX':>7}  LAST SEEN"
    )
    for v in views:
        click.echo(view_line(v))


def _push_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("config", type=_File),
        click.argument("targets", nargs=-1, required=True),
        click.option(
            "--key",
            "key_path",
            type=_File,
            required=True,
            help="Ed25519 private key file (PEM) that signs the document.",
        ),
        click.option(
            "--signed-by",
            required=True,
            help="Who signs it (a person or service), for the audit trail.",
        ),
        click.option(
            "--wait",
            type=click.FloatRange(min=1),
            default=120.0,
            show_default=True,
            help="Seconds to wait for each gateway's reported document (its trial is 60 s by default).",
        ),
        db_option,
        click.option("--json", "as_json", is_flag=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prepare(config: Path, key_path: Path) -> tuple[dict[str, Any], Any]:
    try:
        doc = load_config_file(config)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{config}: not pushed", err=True)
        sys.exit(2)
    try:
        key = load_private_key(key_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from exc
    return doc, key


@fleet.command()
@broker_options
@_push_options
@_link_errors
def push(
    config: Path,
    targets: tuple[str, ...],
    key_path: Path,
    signed_by: str,
    wait: float,
    db: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Sign CONFIG (a gateway config in YAML) for each SITE/GATEWAY and push it; wait for the results."""
    selector = _selector(targets, required=True)
    assert selector is not None
    doc, key = _prepare(config, key_path)
    outcomes = Fleet(broker_settings(kw), db).push(selector, doc, key, signed_by, wait_s=wait)
    for o in outcomes:
        click.echo(json.dumps(o.row(), ensure_ascii=False) if as_json else outcome_line(o))
    if not all(o.ok for o in outcomes):
        sys.exit(1)


@fleet.command()
@broker_options
@_push_options
@click.option(
    "--canary",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Gateways in the first wave.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Gateways in each later wave.",
)
@_link_errors
def rollout(
    config: Path,
    targets: tuple[str, ...],
    key_path: Path,
    signed_by: str,
    wait: float,
    db: str | None,
    as_json: bool,
    canary: int,
    batch: int,
    **kw: Any,
) -> None:
    """Push CONFIG in waves, canary first; stop at the first gateway that does not apply it."""
    selector = _selector(targets, required=True)
    assert selector is not None
    doc, key = _prepare(config, key_path)
    report = Fleet(broker_settings(kw), db).rollout(
        selector, doc, key, signed_by, canary=canary, batch=batch, wait_s=wait
    )
    print_rollout(report, as_json)
    if not report.ok:
        sys.exit(1)


@fleet.command()
@broker_options
@click.argument("manifest_path", metavar="MANIFEST", type=_File)
@click.argument("url", metavar="URL|BUNDLE")
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--via",
    type=click.Choice(["url", "mqtt"]),
    default="url",
    show_default=True,
    help="url: the gateways fetch the bundle from URL; mqtt: BUNDLE is the file here,"
    " sent to each gateway over MQTT in chunks.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
    default=DEFAULT_CHUNK_BYTES,
    show_default=True,
    help="Bytes per chunk with --via mqtt.",
)
@click.option(
    "--command-key",
    type=_File,
    default=None,
    help="Ed25519 private key file that signs the command (gateways that require signed commands).",
)
@click.option("--canary", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--wait",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Seconds to wait for each gateway's end of the update (fetch, install, health gate).",
)
@db_option
@click.option("--json", "as_json", is_flag=True)
@_link_errors
def update(
    manifest_path: Path,
    url: str,
    targets: tuple[str, ...],
    via: str,
    chunk_size: int,
    command_key: Path | None,
    canary: int,
    batch: int,
    wait: float,
    db: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Roll the release of MANIFEST (signed with an update key) out from URL (or BUNDLE), in waves."""
    from community_protocol.ed25519 import CommandSigner

    from .update import roll_update

    selector = _selector(targets, required=True)
    assert selector is not None
    try:
        raw = manifest_path.read_bytes()[: 256 * 1024 + 1]
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or len(raw) > 256 * 1024:
            raise ValueError("not a JSON object of at most 256 KiB")
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{manifest_path}: {exc}", param_hint="MANIFEST") from exc
    signer = None
    if command_key is not None:
        try:
            signer = CommandSigner(load_private_key(command_key))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--command-key") from exc
    try:
        bundle = Path(url) if via == "mqtt" else None
        report = roll_update(Fleet(broker_settings(kw), db), selector, manifest,
                             None if bundle else url, bundle=bundle, chunk_size=chunk_size,
                             signer=signer, canary=canary, batch=batch, wait_s=wait)  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MANIFEST") from exc
    print_rollout(report, as_json, done="committed it")
    if not report.ok:
        sys.exit(1)


@fleet.command()
@click.argument("targets", nargs=-1)
@click.option(
    "--db", "db", required=True, help="The audit database (SQLite file or postgresql:// URL)."
)
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(targets: tuple[str, ...], db: str, limit: int, as_json: bool) -> None:
    """The audit trail, newest first: what was pushed, what gateways reported and audited."""
    selector = _selector(targets, required=False)
    try:
        rows = audit_trail(db, selector, limit=limit)
    except AuditError as exc:
        raise click.ClickException(str(exc)) from exc
    for r in rows:
        click.echo(json.dumps(r.row(), ensure_ascii=False) if as_json else audit_line(r))
    if not rows and not as_json:
        click.echo("no audit records")


@fleet.command()
@broker_options
@click.option(
    "--db", "db", required=True, help="The audit database (SQLite file or postgresql:// URL)."
)
@_link_errors
def watch(db: str, **kw: Any) -> None:
    """Record every gateway's configuration audit events (gateway.config) until stopped."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Fleet(broker_settings(kw), db).watch(stop, on_row=lambda r: click.echo(audit_line(r)))


@fleet.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="fleet", show_default=True, help="Files NAME.key and NAME.pub.")
def keygen(folder: Path, name: str) -> None:
    """Write a new signing key pair (NAME.key 0600, NAME.pub) into FOLDER; never overwrites."""
    try:
        private, public, kid = generate_key(folder, name)
    except (FileExistsError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"key {kid}: private {private} (keep it off the gateways), public {public}"
        " (add it to each gateway's security.config_keys)"
    )


@fleet.command()
@broker_options
@click.argument("gateway", metavar="SITE/GATEWAY")
@click.argument(
    "command", type=click.Choice(["check", "outbox", "health", "logs", "read", "restart"])
)
@click.argument("target", required=False, metavar="[DEVICE|DRIVER]")
@click.option(
    "--key",
    "key_path",
    type=_File,
    required=True,
    help="Ed25519 private key file of a fleet key (one in the gateway's security.config_keys).",
)
@click.option("--lines", type=click.IntRange(1, 500), default=None, help="logs: newest N lines.")
@click.option(
    "--level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    default=None,
    help="logs: the lowest level shown.",
)
@click.option("--no-devices", is_flag=True, help="check: do not read the devices.")
@click.option("--by", default=None, help="Who asks (an operator name), signed with the request.")
@click.option(
    "--wait",
    type=click.FloatRange(min=1, max=600),
    default=45.0,
    show_default=True,
    help="Seconds to wait for the reply.",
)
@click.option("--json", "as_json", is_flag=True, help="The reply document as JSON.")
@_link_errors
def diag(
    gateway: str,
    command: str,
    target: str | None,
    key_path: Path,
    lines: int | None,
    level: str | None,
    no_devices: bool,
    by: str | None,
    wait: float,
    as_json: bool,
    **kw: Any,
) -> None:
    """Ask one gateway for a diagnostic: check, outbox, health, logs, read DEVICE, restart DRIVER.

    The request is signed with --key; the gateway answers only a fleet key's requests.
    """
    from community_protocol.ed25519 import CommandSigner
    from community_protocol.ids import Identity

    from .diag import DiagError, diag_fields, diagnose, render

    site, _, gw = gateway.partition("/")
    try:
        identity = Identity(site, gw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SITE/GATEWAY") from exc
    needs = {"read": "DEVICE", "restart": "DRIVER"}.get(command)
    if (target is None) is (needs is not None):
        wanted = f"{command} needs a {needs}" if needs else f"{command} takes no argument"
        raise click.UsageError(wanted)
    try:
        path, fields = diag_fields(
            command, lines=lines, level=level, by=by,
            device=target if command == "read" else None,
            driver=target if command == "restart" else None,
            devices=False if no_devices else None,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        signer = CommandSigner(load_private_key(key_path))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from exc
    try:
        reply = diagnose(broker_settings(kw), identity, path, fields, signer, wait_s=wait)
    except DiagError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(reply, ensure_ascii=False, indent=2))
    else:
        for line in render(reply):
            click.echo(line)
    if reply.get("ok") is not True:
        sys.exit(1)
