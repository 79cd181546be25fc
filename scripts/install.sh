#!/usr/bin/env bash
# Install, upgrade or remove the community gateway on Raspberry Pi OS or Debian 12.
#
#   sudo scripts/install.sh                      install; a second run changes nothing
#   sudo scripts/install.sh --upgrade            reinstall the program from this checkout,
#                                                keep config and state, restart the service
#   sudo scripts/install.sh --uninstall          remove program and units, keep config and data
#   sudo scripts/install.sh --uninstall --purge  remove config, data and the service user too
#
# For image builds and tests:
#   --root DIR    install into DIR instead of / (creates no user: it says what it would do)
#   --no-user     do not create the service user
#   --skip-venv   do not build the virtualenv (quick tests of everything else)
#
# What goes where (docs/install.md):
#   /opt/community-gateway/venv          the program (pip install of this checkout),
#                                        linked as /usr/local/bin/gateway
#   /etc/community-gateway/gateway.yaml  the config, copied from systemd/gateway.example.yaml
#                                        only when absent; secrets/ next to it (all 0600/0700)
#   /var/lib/community-gateway           state: the outbox (the service's only writable place)
#   /etc/systemd/system/community-gateway{,-firstboot}.service, enabled
set -euo pipefail
# The program must be readable by the service user whatever root's umask is; private
# files and folders get their modes explicitly.
umask 022

NAME=community-gateway
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
ROOT=""
MODE=install
PURGE=0
MAKE_USER=1
MAKE_VENV=1

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a folder"; ROOT="$(cd "$2" && pwd)"; shift ;;
    --root=*) ROOT="$(cd "${1#--root=}" && pwd)" ;;
    --upgrade) MODE=upgrade ;;
    --uninstall) MODE=uninstall ;;
    --purge) PURGE=1 ;;
    --no-user) MAKE_USER=0 ;;
    --skip-venv) MAKE_VENV=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done
[ "$ROOT" = "/" ] && ROOT=""
[ "$PURGE" = 1 ] && [ "$MODE" != uninstall ] && die "--purge goes with --uninstall"

OPT="$ROOT/opt/$NAME"
ETC="$ROOT/etc/$NAME"
STATE="$ROOT/var/lib/$NAME"
UNITS="$ROOT/etc/systemd/system"
WANTS="$UNITS/multi-user.target.wants"
DROPIN="$UNITS/$NAME.service.d"
SERVICE="$NAME.service"
FIRSTBOOT="$NAME-firstboot.service"

# systemd runs this machine (not a chroot of an image build, not a --root tree).
live_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# Users and groups of the tree being installed: the host's, or the --root tree's files.
has_user() {
  if [ -z "$ROOT" ]; then getent passwd "$1" >/dev/null; else grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null; fi
}
has_group() {
  if [ -z "$ROOT" ]; then getent group "$1" >/dev/null; else grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null; fi
}

# Copy a file only when its content or mode differs, so a second run touches nothing.
put() { # SRC DST MODE
  if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]; then return; fi
  install -D -m "$3" "$1" "$2"
  say "wrote ${2#"$ROOT"}"
}

put_text() { # DST MODE TEXT
  local tmp
  tmp="$(mktemp)"
  printf '%s' "$3" >"$tmp"
  put "$tmp" "$1" "$2"
  rm -f "$tmp"
}

link() { # TARGET LINK
  if [ "$(readlink "$2" 2>/dev/null)" = "$1" ]; then return; fi
  mkdir -p "$(dirname "$2")"
  ln -sfn "$1" "$2"
  say "linked ${2#"$ROOT"} -> $1"
}

# A private folder, owned by the service user when it exists.
private_dir() {
  if [ -d "$1" ] && [ "$(stat -c %a "$1")" = 700 ] && { [ -z "$OWNER" ] || [ "$(stat -c %U:%G "$1")" = "$OWNER" ]; }; then
    return
  fi
  install -d -m 0700 "$1"
  [ -z "$OWNER" ] || chown "$OWNER" "$1"
  say "made ${1#"$ROOT"} (0700${OWNER:+, $OWNER})"
}

check_system() {
  [ -n "$ROOT" ] && return
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or give --root DIR"
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    case " ${ID:-} ${ID_LIKE:-} " in
      *" debian "* | *" raspbian "*) ;;
      *) say "warning: written for Debian and Raspberry Pi OS, this is ${PRETTY_NAME:-unknown}" ;;
    esac
  fi
}

make_user() {
  local groups="dialout"
  has_group gpio && groups="dialout,gpio"
  if [ "$MAKE_USER" = 0 ]; then
    say "not creating the service user (--no-user)"
  elif [ -n "$ROOT" ]; then
    has_user "$NAME" || say "would create system user $NAME (groups $groups); --root creates no users"
  else
    if ! has_user "$NAME"; then
      useradd --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
        --shell /usr/sbin/nologin --comment "Community gateway" "$NAME"
      say "created system user $NAME"
    fi
    local g
    for g in dialout gpio; do
      if has_group "$g" && ! id -nG "$NAME" | tr ' ' '\n' | grep -qx "$g"; then
        usermod -aG "$g" "$NAME"
        say "added $NAME to group $g"
      fi
    done
  fi
  OWNER=""
  # chown needs root, and a --root tree's user is only known by number to this host.
  if has_user "$NAME" && [ "$(id -u)" -eq 0 ]; then
    if [ -z "$ROOT" ]; then
      OWNER="$NAME:$NAME"
    else
      OWNER="$(awk -F: -v n="$NAME" '$1 == n { print $3 ":" $4 }' "$ROOT/etc/passwd")"
    fi
  fi
}

make_venv() {
  if [ "$MAKE_VENV" = 0 ]; then
    say "not building the virtualenv (--skip-venv)"
    return
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
  if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    [ -z "$ROOT" ] || die "$PYTHON cannot make virtualenvs: install python3-venv"
    say "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  local pip=("$OPT/venv/bin/pip" --disable-pip-version-check --quiet)
  if [ ! -x "$OPT/venv/bin/python" ]; then
    "$PYTHON" -m venv "$OPT/venv"
    say "made ${OPT#"$ROOT"}/venv"
  fi
  if [ ! -x "$OPT/venv/bin/gateway" ]; then
    "${pip[@]}" install "$SRC"
    say "installed the gateway $("$OPT/venv/bin/gateway" --version)"
  elif [ "$MODE" = upgrade ]; then
    "${pip[@]}" install --upgrade "$SRC"
    # Same version number, new code (a checkout between releases): replace it anyway.
    "${pip[@]}" install --force-reinstall --no-deps "$SRC"
    say "upgraded to $("$OPT/venv/bin/gateway" --version)"
  fi
}

install_files() {
  install -d -m 0755 "$OPT"
  private_dir "$ETC"
  private_dir "$ETC/secrets"
  private_dir "$STATE"
  if [ ! -e "$ETC/gateway.yaml" ]; then
    put "$SRC/systemd/gateway.example.yaml" "$ETC/gateway.yaml" 0600
    [ -z "$OWNER" ] || chown "$OWNER" "$ETC/gateway.yaml"
  fi
  put "$SRC/docs/install.md" "$OPT/docs/install.md" 0644
  # `gateway check`, `gateway ports` ... on the PATH of installers and admins.
  link "/opt/$NAME/venv/bin/gateway" "$ROOT/usr/local/bin/gateway"
  put "$SRC/systemd/$SERVICE" "$UNITS/$SERVICE" 0644
  put "$SRC/systemd/$FIRSTBOOT" "$UNITS/$FIRSTBOOT" 0644
  # Debian has no gpio group; Raspberry Pi OS has, and owns /dev/gpiochip* with it.
  if has_group gpio; then
    put_text "$DROPIN/gpio.conf" 0644 $'# Written by install.sh: this system has a gpio group.\n[Service]\nSupplementaryGroups=gpio\n'
  elif [ -e "$DROPIN/gpio.conf" ]; then
    rm -f "$DROPIN/gpio.conf"
    rmdir --ignore-fail-on-non-empty "$DROPIN"
  fi
}

enable_units() {
  if live_systemd; then
    systemctl daemon-reload
    systemctl enable --quiet "$SERVICE" "$FIRSTBOOT"
    if [ "$MODE" = upgrade ]; then
      systemctl try-restart "$SERVICE"
      say "restarted $SERVICE if it was running"
    fi
  else
    # An image build's chroot or a --root tree: make what `systemctl enable` would.
    link "/etc/systemd/system/$SERVICE" "$WANTS/$SERVICE"
    link "/etc/systemd/system/$FIRSTBOOT" "$WANTS/$FIRSTBOOT"
  fi
}

uninstall() {
  if live_systemd; then
    systemctl disable --now --quiet "$SERVICE" "$FIRSTBOOT" || true
  fi
  rm -f "$WANTS/$SERVICE" "$WANTS/$FIRSTBOOT" "$UNITS/$SERVICE" "$UNITS/$FIRSTBOOT"
  rm -rf "$DROPIN" "$OPT"
  if [ "$(readlink "$ROOT/usr/local/bin/gateway" 2>/dev/null)" = "/opt/$NAME/venv/bin/gateway" ]; then
    rm -f "$ROOT/usr/local/bin/gateway"
  fi
  live_systemd && systemctl daemon-reload
  say "removed the program and its units"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ETC" "$STATE"
    say "removed ${ETC#"$ROOT"} and ${STATE#"$ROOT"}"
    if [ -z "$ROOT" ] && has_user "$NAME"; then
      userdel "$NAME"
      say "removed user $NAME"
    fi
  else
    say "kept ${ETC#"$ROOT"} and ${STATE#"$ROOT"} (--purge removes them)"
  fi
}

check_system
if [ "$MODE" = uninstall ]; then
  uninstall
  exit 0
fi
make_user
make_venv
install_files
enable_units
say "done; next: edit ${ETC#"$ROOT"}/gateway.yaml (or gateway provision), then gateway check"
