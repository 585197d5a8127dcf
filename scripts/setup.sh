#!/usr/bin/env bash
# Bootstrap a development machine for objfs (Debian 12).
#
#   1. apt packages that are missing (and only those),
#   2. a virtualenv in .venv (created only if missing or broken),
#   3. `pip install -e '.[dev]'` into it, only when pyproject.toml is newer
#      than the stamp file .venv/.installed.
#
# Safe to run again: a second run checks and does nothing.
# Registries are used as the machine is configured; nothing here names one,
# and apt/pip run quietly so their logs don't either (errors still show).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.installed"
# rclone: a real client for the S3 tests (tests/s3/test_clients.py), as
# aws-cli and s3cmd are (those come with pip, below).
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config systemd rclone)

say() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# --- Python -----------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found on PATH (need Python >= 3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version 2>&1) is too old: objfs needs Python >= 3.11"
say "using $(command -v "$PYTHON") ($("$PYTHON" --version 2>&1))"

# Debian's python3 ships the venv module but not ensurepip (that is in
# python3-venv), so `-m venv --help` alone is not enough to know venv works.
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

# --- apt packages -----------------------------------------------------------
is_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -eq 0 ]]; then
            SUDO=()
        elif command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            die "missing apt packages (${missing[*]}); not root and no sudo: install them and re-run"
        fi
        say "missing apt packages: ${missing[*]}"
        say "running apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update
        say "running apt-get install ${missing[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -qq install -y --no-install-recommends "${missing[@]}"
    else
        say "apt packages present: ${APT_PACKAGES[*]}"
    fi
else
    say "WARNING: no dpkg/apt-get here; skipping system packages (${APT_PACKAGES[*]})"
fi

# --- virtualenv -------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    say "reusing existing $VENV ($("$VENV/bin/python" --version 2>&1))"
else
    if [[ -e "$VENV" ]]; then
        say "$VENV exists but its python does not run; recreating it"
        rm -rf "$VENV"
    fi
    say "creating $VENV with $PYTHON -m venv"
    "$PYTHON" -m venv "$VENV"
fi

# --- project + dev dependencies ---------------------------------------------
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" ]]; then
    say "installing objfs and its dev extras: pip install -e '.[dev]'"
    # --quiet: pip's own progress would echo the machine's index configuration.
    "$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -e '.[dev]'
else
    say "dependencies up to date ($STAMP is newer than pyproject.toml); skipping pip"
fi
touch "$STAMP"

say "done"
