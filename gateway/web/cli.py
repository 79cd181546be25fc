"""`gateway staff add|remove|list`: the staff accounts of the local web console."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config.cli import config_option, load_or_exit
from gateway.web.staff import StaffError, StaffFile, check_id, check_secret, staff_file_of

__all__ = ["staff"]


def _file(config_path: Path) -> StaffFile:
    cfg = load_or_exit(config_path).config
    return staff_file_of(cfg.web, cfg.gateway.state_dir)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group()
def staff() -> None:
    """Staff accounts of the web console (PINs or passwords, stored hashed)."""


@staff.command("add")
@click.argument("staff_id")
@click.option("--name", default="", help="The person's name, shown in the console.")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from the first line of stdin.")
@click.option("--replace", is_flag=True, help="Set a new PIN for an existing account.")
@config_option
def add(staff_id: str, name: str, pin_stdin: bool, replace: bool, config_path: Path) -> None:
    """Add a staff account; asks for the PIN or password twice."""
    file = _file(config_path)
    try:
        check_id(staff_id)
        if pin_stdin:
            secret = sys.stdin.readline().rstrip("\r\n")
        else:
            secret = click.prompt("PIN or password", hide_input=True, confirmation_prompt=True)
        check_secret(secret)
        file.add(staff_id, name, secret, replace=replace)
    except (StaffError, OSError) as exc:
        _fail(exc)
    click.echo(f"{staff_id}: {'updated' if replace else 'added'} in {file.path}")


@staff.command("remove")
@click.argument("staff_id")
@config_option
def remove(staff_id: str, config_path: Path) -> None:
    """Remove a staff account; their open console sessions end at their next request."""
    file = _file(config_path)
    try:
        file.remove(staff_id)
    except (StaffError, OSError) as exc:
        _fail(exc)
    click.echo(f"{staff_id}: removed from {file.path}")


@staff.command("list")
@config_option
def list_(config_path: Path) -> None:
    """List staff ids and names (never the hashes)."""
    file = _file(config_path)
    try:
        members = file.load()
    except StaffError as exc:
        _fail(exc)
        return
    if not members:
        click.echo(f"no staff accounts in {file.path}")
        return
    width = max(len(m.id) for m in members.values())
    for m in members.values():
        click.echo(f"{m.id.ljust(width)}  {m.name}".rstrip())
