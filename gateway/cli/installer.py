"""Installer commands: provision a config, check a site before leaving, list serial ports,
and the first-boot step of a flashed card."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config.cli import config_option

__all__ = ["check", "firstboot", "ports", "provision"]


@click.command()
@config_option
def check(config_path: Path) -> None:
    """Check everything before leaving a site: config, broker, TLS, devices, serial ports.

    One line per check; exit status 1 when any check failed.  Run it as the service
    user to see what the service will see:
    sudo -u community-gateway gateway check -c /etc/community-gateway/gateway.yaml
    """
    from gateway.install.checkall import run_all
    from gateway.install.checks import Status

    results, problems = run_all(config_path)
    width = max(len(r.name) for r in results)
    for r in results:
        click.echo(f"{r.status.value:<4}  {r.name:<{width}}  {r.detail}".rstrip())
        if r.status is Status.FAIL and r.hint:
            click.echo(f"{'':<4}  {'':<{width}}  -> {r.hint}")
    for line in problems:
        click.echo(f"      {line}")
    failed = sum(r.failed for r in results)
    skipped = sum(r.status is Status.SKIP for r in results)
    ok = len(results) - failed - skipped
    click.echo(f"{len(results)} checks: {ok} OK, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


@click.command()
def ports() -> None:
    """List the serial ports of this machine, with USB vendor, product and serial number."""
    from serial.tools import list_ports

    found = sorted(list_ports.comports(), key=lambda p: p.device)
    if not found:
        click.echo("no serial ports found (is the USB adapter plugged in? see dmesg)")
        return
    by_id = _by_id_links()
    rows = [("PORT", "USB VID:PID", "SERIAL", "DESCRIPTION", "STABLE NAME")]
    for p in found:
        usb = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        desc = " ".join(x for x in (p.manufacturer, p.product) if x) or (
            p.description if p.description != "n/a" else ""
        )
        rows.append((p.device, usb, p.serial_number or "", desc, by_id.get(p.device, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _by_id_links() -> dict[str, str]:
    # /dev/serial/by-id names survive re-plugging and reboots; /dev/ttyUSB0 does not.
    links: dict[str, str] = {}
    folder = Path("/dev/serial/by-id")
    if folder.is_dir():
        for link in sorted(folder.iterdir()):
            links.setdefault(str(link.resolve()), str(link))
    return links


def _optional(value: str | None) -> str | None:
    return value or None


@click.command()
@click.option("--site", "site", prompt="Site id (letters, digits, _ . -)", help="Site id.")
@click.option("--gateway", "gateway_id", prompt="Gateway id", help="This gateway's id.")
@click.option("--broker-url", prompt="Broker URL (mqtts://host:8883)", help="mqtts://host:8883")
@click.option(
    "--ca-file",
    default="",
    prompt="CA certificate file (empty: the system's CAs)",
    help="The CA that signed the broker's certificate; copied into secrets/ca.crt.",
)
@click.option(
    "--username",
    default="",
    prompt="Broker user name (empty: gateway@site if a password follows)",
    help="MQTT user: the gateway's identity gateway@site (docs/security.md), or empty.",
)
@click.option(
    "--password",
    default="",
    prompt="Broker password (empty: none)",
    hide_input=True,
    envvar="GATEWAY_BROKER_PASSWORD",
    help="Stored in secrets/broker-password; or set GATEWAY_BROKER_PASSWORD.",
)
@click.option(
    "--csr/--no-csr",
    default=False,
    help="Make a client key and a certificate signing request (CN=gateway@site) for mutual TLS.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/etc/community-gateway"),
    show_default=True,
    help="Folder for gateway.yaml and secrets/ (or the boot partition's community-gateway/).",
)
@click.option(
    "--outbox-path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("/var/lib/community-gateway/outbox.db"),
    show_default=True,
)
@click.option("--force", is_flag=True, help="Replace an existing gateway.yaml.")
def provision(
    site: str,
    gateway_id: str,
    broker_url: str,
    ca_file: str,
    username: str,
    password: str,
    csr: bool,
    out: Path,
    outbox_path: Path,
    force: bool,
) -> None:
    """Write a first config and its secret files (0600), asking for what is not given."""
    from gateway.install.provision import Answers, ProvisionError, service_owner
    from gateway.install.provision import provision as write

    answers = Answers(
        site=site.strip(),
        gateway=gateway_id.strip(),
        broker_url=broker_url.strip(),
        ca_file=Path(ca_file) if ca_file else None,
        username=_optional(username.strip()),
        password=_optional(password),
        csr=csr,
        outbox_path=outbox_path,
    )
    try:
        written = write(answers, out, force=force, owner=service_owner())
    except ProvisionError as exc:
        click.echo(f"nothing written: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote {written.config}")
    for path in written.secrets:
        click.echo(f"wrote {path} (mode 0600)")
    if written.csr is not None:
        click.echo(f"wrote {written.csr}: send it to the platform's CA (CN={answers.common_name})")
        click.echo(f"then put the signed certificate at {out / 'secrets' / 'client.crt'}")
    click.echo(f"next: gateway validate -c {written.config}, add devices, gateway check")


@click.command()
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("/"),
    help="Operate on a tree under this folder instead of / (image builds, tests).",
)
@click.option(
    "--lock",
    "action",
    flag_value="lock",
    help="Refuse every later folder on the boot partition (anyone with the card could "
    "otherwise provision this gateway again).",
)
@click.option("--unlock", "action", flag_value="unlock", help="Allow first boot again.")
def firstboot(root: Path, action: str | None) -> None:
    """Install the config folder from the boot partition (run once by systemd)."""
    from gateway.install.firstboot import REPORT, Outcome, lock, run, unlock

    if action == "lock":
        click.echo(f"first boot is locked ({lock(root)}); undo with: gateway firstboot --unlock")
        return
    if action == "unlock":
        was = unlock(root)
        click.echo("first boot is open again" if was else "first boot was not locked")
        return
    result = run(root)
    if result.outcome is Outcome.NOTHING:
        click.echo("no community-gateway/gateway.yaml on the boot partition: nothing to do")
        return
    failed = result.outcome is not Outcome.INSTALLED
    for line in result.lines:
        click.echo(line, err=failed)
    assert result.folder is not None
    click.echo(f"{result.outcome}: report in {result.folder / REPORT}")
    sys.exit(1 if failed else 0)
