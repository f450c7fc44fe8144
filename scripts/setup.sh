#!/usr/bin/env bash
# Idempotent setup for a fresh clone (developer machine or CI, Debian 12).
#
#   * apt packages the tests and benchmarks need, installed only when missing:
#       nats-server  (services talk over NATS; tests start a private server)
#       restic       (bench/bench_core.py compares against it)
#       chromium     (browser UI tests drive /usr/bin/chromium through Playwright;
#                     `playwright install` is never run: it downloads a browser build)
#       postgresql   (tests/services/test_hooks.py dumps a real database in a pre-command);
#                    its cluster is started when it is not running
#   * .venv with `pip install -e '.[test]'`: TimeVault and the tools `make test` runs (pytest,
#     ruff, mypy and the type stubs it needs), redone only when pyproject.toml changed since the
#     last successful install (hash kept in .venv/.setup-stamp) or a tool is missing.
#   * a pinned TypeScript in .venv/node (from the npm registry), which type-checks the web UI's
#     JavaScript (tests/gateway/test_ui_types.py); Node.js and npm come from apt only when missing.
#
# A second run with everything in place is silent and takes well under a second.
# Environment: PYTHON (default python3, must be >= 3.11), SETUP_FORCE=1 reinstalls the venv packages.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.setup-stamp"
APT_PACKAGES=(nats-server restic chromium fonts-liberation postgresql)
# Exact version: a newer compiler may report new errors, and CI must not change under a commit.
TYPESCRIPT_VERSION=5.9.3
NODE_PREFIX="$VENV/node"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (install sudo or run as root)"
    fi
}

apt_missing() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            printf '%s\n' "$pkg"
        fi
    done
}

# --- system packages ---------------------------------------------------------------------------
want=("${APT_PACKAGES[@]}")
# Debian's python3 needs python3-venv for ensurepip; a pyenv/python.org build has it built in.
if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    want+=(python3-venv)
fi
# Checked by command, not by package: a Node.js from elsewhere (e.g. NodeSource's `nodejs`, which
# ships npm itself and conflicts with Debian's `npm`) is used as it is.
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)

if command -v dpkg-query >/dev/null 2>&1; then
    mapfile -t missing < <(apt_missing "${want[@]}")
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing apt packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    log "warning: not a Debian system; install ${APT_PACKAGES[*]} yourself"
fi

# --- PostgreSQL: the hook tests need a running server on the standard port -----------------------
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q 2>/dev/null; then
    if command -v pg_lsclusters >/dev/null 2>&1; then
        log "starting PostgreSQL"
        while read -r version cluster _; do
            as_root pg_ctlcluster "$version" "$cluster" start >/dev/null 2>&1 || true
        done < <(pg_lsclusters --no-header 2>/dev/null)
    fi
    pg_isready -q -t 30 2>/dev/null || log "warning: PostgreSQL does not answer; tests/services/test_hooks.py will fail"
fi

# --- Python virtualenv ---------------------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" --version 2>&1); TimeVault needs Python >= 3.11 (set PYTHON=...)"

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv --clear "$VENV"
    rm -f "$STAMP"
fi

want_stamp="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "${SETUP_FORCE:-0}" = 1 ] || [ "$want_stamp" != "$have_stamp" ] || [ ! -x "$VENV/bin/timevault" ] \
        || [ ! -x "$VENV/bin/ruff" ] || [ ! -x "$VENV/bin/mypy" ]; then
    log "installing TimeVault and test dependencies into $VENV (log: $VENV/pip-install.log)"
    # Build-backend and local-index warnings go to the log; it is shown only when pip fails.
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[test]' \
            >"$VENV/pip-install.log" 2>&1; then
        tail -n 40 "$VENV/pip-install.log" >&2
        die "pip install failed (full log: $VENV/pip-install.log)"
    fi
    printf '%s\n' "$want_stamp" >"$STAMP"
fi

# --- TypeScript (type-checks static/*.js of the gateway; nothing is compiled or bundled) ----------
# Kept inside .venv so the repository's top level stays clean and `make distclean` removes it.
have_tsc="$(node -p "require('./$NODE_PREFIX/node_modules/typescript/package.json').version" 2>/dev/null || true)"
if [ "${SETUP_FORCE:-0}" = 1 ] || [ "$have_tsc" != "$TYPESCRIPT_VERSION" ]; then
    log "installing TypeScript $TYPESCRIPT_VERSION into $NODE_PREFIX (log: $VENV/npm-install.log)"
    mkdir -p "$NODE_PREFIX"
    if ! npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact \
            "typescript@$TYPESCRIPT_VERSION" >"$VENV/npm-install.log" 2>&1; then
        tail -n 40 "$VENV/npm-install.log" >&2
        die "npm install failed (full log: $VENV/npm-install.log)"
    fi
fi

# --- bytecode of the checkout ------------------------------------------------------------------------
# An editable install imports the sources. Where PYTHONDONTWRITEBYTECODE is set (CI machines set
# it), every `timevault` command and every service a test starts would compile ~170 modules again
# (~0.1 s each time); compiled once here, as a wheel install would be. Only stale files are
# redone, so a run with nothing changed costs a directory walk.
"$VENV/bin/python" -m compileall -q -j 0 shared services proto >/dev/null
