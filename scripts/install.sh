#!/usr/bin/env bash
# Install, upgrade or remove the community gateway on Raspberry Pi OS or Debian 12.
#
#   sudo scripts/install.sh                      install; a second run changes nothing
#   sudo scripts/install.sh --upgrade            reinstall the program from this checkout,
#                                                keep config and state, restart the service
#   sudo scripts/install.sh --uninstall          remove program and units, keep config and data
#   sudo scripts/install.sh --uninstall --purge  remove config, data and the service user too
#
# Offline (no package index at the site), from a bundle made by scripts/bundle:
#   sudo scripts/install.sh --bundle FILE.tar.gz   install from the bundle's wheels
#   sudo community-gateway-*/scripts/install.sh    the same, run from an unpacked bundle
#
# For image builds and tests:
#   --root DIR    install into DIR instead of / (creates no user: it says what it would do);
#                 the tree works at / when that image boots
#   --no-user     do not create the service user
#   --skip-venv   do not build the virtualenv (quick tests of everything else)
#
# The program is built in a new virtualenv beside the old one and replaces it in one
# rename only once it works: a failed install or upgrade leaves the previous one running.
# Every failure ends with an "install: error:" line.  A run that changes nothing prints
# nothing.
#
# What goes where (docs/install.md):
#   /opt/community-gateway/venv          the program (a link to venvs/<when>), linked as
#                                        /usr/local/bin/gateway
#   /opt/community-gateway/launch        what the service starts: it runs that venv, or a
#                                        release a software update installed (docs/fleet.md)
#   /etc/community-gateway/gateway.yaml  the config, copied from systemd/gateway.example.yaml
#                                        only when absent; secrets/ next to it (all 0600/0700)
#   /var/lib/community-gateway           state: the outbox (the service's only writable place)
#   /etc/systemd/system/community-gateway{,-firstboot}.service, enabled
set -eEuo pipefail
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
BUNDLE=""
WHEELS=""
CHANGED=0
NOTES=()
NEW_VENV=""
ARGS=("$@")

# A change: printed at once.  A note: printed at the end, and only if something changed,
# so that a second run is silent.
say() { CHANGED=1; printf 'install: %s\n' "$*"; }
note() { NOTES+=("$*"); }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -eEuo/{/^set -eEuo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
# Whatever fails unforeseen still ends with an install: line, and no half-built venv.
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR
trap '[ -z "$NEW_VENV" ] || rm -rf "$NEW_VENV"' EXIT

while (($#)); do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a folder"; ROOT="$(cd "$2" && pwd)" || die "no folder $2"; shift ;;
    --root=*) ROOT="$(cd "${1#--root=}" && pwd)" || die "no folder ${1#--root=}" ;;
    --bundle) [ $# -ge 2 ] || die "--bundle needs a file"; BUNDLE="$2"; shift ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; WHEELS="$2"; shift ;;
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

# --bundle FILE: unpack it and run the bundle's own installer, so that the program, its
# units and its docs are of one version.
if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE" ] || die "no bundle $BUNDLE"
  unpacked="$(mktemp -d)"
  trap 'rm -rf "$unpacked"' EXIT
  if ! tar -xzf "$BUNDLE" -C "$unpacked" 2>"$unpacked/.tar-errors"; then
    die "$BUNDLE is not a complete bundle ($(tail -n 1 "$unpacked/.tar-errors")); copy it again"
  fi
  inner=("$unpacked"/community-gateway-*/scripts/install.sh)
  [ -f "${inner[0]}" ] || die "$BUNDLE is not a bundle of scripts/bundle (no community-gateway-*/scripts/install.sh)"
  rest=()
  skip=0
  for arg in "${ARGS[@]}"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$arg" in --bundle) skip=1; continue ;; esac
    rest+=("$arg")
  done
  trap - ERR
  status=0
  PYTHON="$PYTHON" bash "${inner[0]}" "${rest[@]}" || status=$?
  exit "$status"
fi
# Run from an unpacked bundle: its wheels, and no package index at all.
[ -z "$WHEELS" ] && [ -f "$SRC/BUNDLE" ] && [ -d "$SRC/wheels" ] && WHEELS="$SRC/wheels"

OPT="$ROOT/opt/$NAME"
VENVS="$OPT/venvs"
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
    note "not creating the service user (--no-user)"
  elif [ -n "$ROOT" ]; then
    has_user "$NAME" || note "the image makes system user $NAME (groups $groups) when it boots (sysusers.d); --root creates no users"
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

# The bundle fits this machine, and no wheel was damaged on its way here.
check_bundle() {
  local manifest="$WHEELS/../BUNDLE" arch pyver want_arch want_py
  [ -d "$WHEELS" ] || die "no wheels folder $WHEELS"
  [ -f "$WHEELS/SHA256SUMS" ] || die "$WHEELS has no SHA256SUMS: make the bundle with scripts/bundle"
  if ! (cd "$WHEELS" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1); then
    die "the bundle is damaged: $(cd "$WHEELS" && sha256sum --quiet -c SHA256SUMS 2>/dev/null | head -n 1); copy it again"
  fi
  if [ -f "$manifest" ]; then
    want_arch="$(sed -n 's/^arch=//p' "$manifest")"
    want_py="$(sed -n 's/^python=//p' "$manifest")"
    arch="$(uname -m)"
    pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$want_arch" != "$arch" ] || [ "$want_py" != "$pyver" ]; then
      die "this bundle is for $want_arch with Python $want_py; this machine is $arch with Python $pyver: make one with scripts/bundle --arch ... --python-version $pyver"
    fi
  fi
}

# pip into the new venv.  From a bundle: nothing but the bundle, neither config files
# nor PIP_* of the caller (a PIP_FIND_LINKS would hide a wheel missing from the bundle).
# Online: the machine's pip config stays (a site's mirror or proxy).
run_pip() { # LOG PIP-ARGS...
  local log="$1"
  shift
  (
    if [ -n "$WHEELS" ]; then
      while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^PIP_' || true)
      export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    "$NEW_VENV/bin/python" -m pip "$@"
  ) >"$log" 2>&1
}

pip_failed() { # LOG WHAT
  sed -n '/ERROR\|rror:/p' "$1" | tail -n 5 | sed 's/^/install:   /' >&2
  die "$2"
}

# A venv made under --root names that folder in its scripts; the image knows /opt only.
relocate() { # VENV
  [ -n "$ROOT" ] || return 0
  local files
  files="$(grep -rlF -- "$ROOT/opt/$NAME" "$1/bin" "$1/pyvenv.cfg" || true)"
  [ -z "$files" ] || printf '%s\n' "$files" | while IFS= read -r f; do
    sed -i "s#$ROOT/opt/$NAME#/opt/$NAME#g" "$f"
  done
  local base
  base="$(readlink "$1/bin/python3" || true)"
  case "$base" in
    /*) [ -e "$ROOT$base" ] || note "warning: the venv runs $base, which $ROOT does not have: the image needs that Python" ;;
  esac
}

venv_works() { # VENV
  [ -x "$1/bin/gateway" ] && "$1/bin/python" -c 'import gateway.cli' >/dev/null 2>&1
}

make_venv() {
  if [ "$MAKE_VENV" = 0 ]; then
    note "not building the virtualenv (--skip-venv)"
    return
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
  if [ "$MODE" = install ] && venv_works "$OPT/venv"; then
    return # installed already: a second run changes nothing
  fi
  [ -z "$WHEELS" ] || check_bundle
  if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    if [ -n "$ROOT" ] || [ -n "$WHEELS" ]; then
      die "$PYTHON cannot make virtualenvs: install python3-venv"
    fi
    say "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
      die "could not install python3-venv with apt-get"
  fi
  local id log
  id="$(date -u +%Y%m%dT%H%M%SZ)-$$"
  log="$(mktemp)"
  mkdir -p "$VENVS"
  # Beside the running one; the EXIT trap removes it unless it was swapped in.
  NEW_VENV="$VENVS/$id"
  "$PYTHON" -m venv "$NEW_VENV" >"$log" 2>&1 || pip_failed "$log" "could not make a virtualenv with $PYTHON"
  if [ -n "$WHEELS" ]; then
    run_pip "$log" install --no-compile --no-index --find-links "$WHEELS" community-gateway ||
      pip_failed "$log" "pip could not install the gateway from the bundle's wheels in $WHEELS (a bundle for another machine?); nothing was changed"
  else
    # protocol/ first: the gateway depends on it and no package index has it.
    run_pip "$log" install --no-compile --retries 1 --timeout 15 "$SRC/protocol" "$SRC" ||
      pip_failed "$log" "pip could not install the gateway from $SRC (no package index reachable? install from a bundle made by scripts/bundle: docs/install.md, Offline install); nothing was changed"
  fi
  relocate "$NEW_VENV"
  # Byte-code now, as it will be found at /opt: the service cannot write it later.
  "$NEW_VENV/bin/python" -m compileall -q ${ROOT:+-f -s "$ROOT" -p /} "$NEW_VENV/lib" >/dev/null 2>&1 || true
  venv_works "$NEW_VENV" || die "the new virtualenv does not run the gateway; nothing was changed"
  local version
  version="$("$NEW_VENV/bin/python" -c 'from importlib.metadata import version; print(version("community-gateway"))')"
  swap_venv "$id"
  say "installed the gateway $version${WHEELS:+ from the bundle} (${OPT#"$ROOT"}/venv -> venvs/$id)"
  forget_updates
}

# Point venv at the new one in a single rename (relative link: right under --root too).
swap_venv() { # ID
  ln -sfn "venvs/$1" "$OPT/.venv.new"
  if [ -d "$OPT/venv" ] && [ ! -L "$OPT/venv" ]; then
    # An install from before venvs/: its scripts name /opt/.../venv, so it cannot move.
    rm -rf "$OPT/venv"
  fi
  mv -Tf "$OPT/.venv.new" "$OPT/venv"
  NEW_VENV=""
}

# What is installed here runs from now on, not a release a software update left in the
# state folder (docs/fleet.md, "Software updates").
forget_updates() {
  if [ -L "$STATE/current" ] || [ -d "$STATE/releases" ] || [ -e "$STATE/update" ]; then
    rm -rf "$STATE/current" "$STATE/releases" "$STATE/update"
    say "removed the releases of software updates from ${STATE#"$ROOT"}: the installed version runs"
  fi
}

# Older venvs, once the new one runs (after the restart of an upgrade).
prune_venvs() {
  local current
  current="$(readlink "$OPT/venv" 2>/dev/null || true)"
  [ -d "$VENVS" ] || return 0
  local old
  for old in "$VENVS"/*; do
    [ -e "$old" ] || continue
    [ "venvs/${old##*/}" = "$current" ] && continue
    rm -rf "$old"
  done
}

install_files() {
  [ -d "$OPT" ] || install -d -m 0755 "$OPT"
  private_dir "$ETC"
  private_dir "$ETC/secrets"
  private_dir "$STATE"
  if [ ! -e "$ETC/gateway.yaml" ]; then
    put "$SRC/systemd/gateway.example.yaml" "$ETC/gateway.yaml" 0600
    [ -z "$OWNER" ] || chown "$OWNER" "$ETC/gateway.yaml"
  fi
  put "$SRC/docs/install.md" "$OPT/docs/install.md" 0644
  # The service's launcher: the release to run, and the switch back from a failing one.
  put "$SRC/gateway/fleet/launch.py" "$OPT/launch" 0755
  # `gateway check`, `gateway ports` ... on the PATH of installers and admins.
  link "/opt/$NAME/venv/bin/gateway" "$ROOT/usr/local/bin/gateway"
  put "$SRC/systemd/$SERVICE" "$UNITS/$SERVICE" 0644
  put "$SRC/systemd/$FIRSTBOOT" "$UNITS/$FIRSTBOOT" 0644
  # The user and the owner of the config folder, also for a --root tree that has no user
  # yet: systemd-sysusers makes the user when the image boots, systemd-tmpfiles then
  # hands it the folder (ConfigurationDirectory= would leave it root's).
  local users=$'# Written by install.sh: the gateway\'s service user.\n'
  users+=$'u community-gateway - "Community gateway" /var/lib/community-gateway /usr/sbin/nologin\n'
  users+=$'m community-gateway dialout\n'
  if has_group gpio; then users+=$'m community-gateway gpio\n'; fi
  put_text "$ROOT/usr/lib/sysusers.d/$NAME.conf" 0644 "$users"
  put_text "$ROOT/usr/lib/tmpfiles.d/$NAME.conf" 0644 $'# Written by install.sh: config and secrets belong to the service user, owner-only.\nZ /etc/community-gateway ~0700 community-gateway community-gateway -\n'
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
  rm -f "$WANTS/$SERVICE" "$WANTS/$FIRSTBOOT" "$UNITS/$SERVICE" "$UNITS/$FIRSTBOOT" \
    "$ROOT/usr/lib/sysusers.d/$NAME.conf" "$ROOT/usr/lib/tmpfiles.d/$NAME.conf"
  rm -rf "$DROPIN" "$OPT"
  if [ "$(readlink "$ROOT/usr/local/bin/gateway" 2>/dev/null)" = "/opt/$NAME/venv/bin/gateway" ]; then
    rm -f "$ROOT/usr/local/bin/gateway"
  fi
  live_systemd && systemctl daemon-reload
  say "removed the program and its units"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ETC" "$STATE" "$ROOT/var/lib/$NAME-firstboot"
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
[ -d "$OPT" ] || { install -d -m 0755 "$OPT"; say "made ${OPT#"$ROOT"}"; }
make_venv
install_files
enable_units
prune_venvs
if [ "$CHANGED" = 1 ]; then
  for line in "${NOTES[@]}"; do printf 'install: %s\n' "$line"; done
  say "done; next: edit ${ETC#"$ROOT"}/gateway.yaml (or gateway provision), then gateway check"
fi
