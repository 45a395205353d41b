#!/usr/bin/env bash
# `sudo deploy/setup-hub.sh [HUB_ROOT]` (or `sudo make hub-setup`): prepares this machine to serve
# hw9 to a class with JupyterHub. Idempotent: rerun it after pulling a new version of hw9.
#
# HUB_ROOT (default /srv/hw9) ends up holding:
#   course/          the student handout (`make handout`: no answers), set up once: libtorch, data,
#                    models and the warm kernel build. Root's, read-only for students; each
#                    student's own folder course/student-<name>/ is created at their first login.
#   builds/<name>/   each student's kernel build folders (theirs alone; slot 0 seeded at login).
#   rust/            the Rust toolchain the kernels compile cells with (this machine's, linked).
#   cargo/           CARGO_HOME: the crates the kernel builds from. The warm build's fingerprints
#                    record these paths, so students must use this exact folder (read-only).
#   venv/            JupyterHub, JupyterLab, the idle culler (deploy/requirements.txt).
#   proxy/           configurable-http-proxy (deploy/proxy, npm ci).
#   jupyterhub_config.py, hw9_hub.py   the hub's configuration (copied from deploy/).
#   state/           the hub's database, cookie secret and log.
# Then: `HUB_ROOT/start-hub` starts the hub (or install deploy/hw9-hub.service).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HUB=${1:-${HW9_HUB_ROOT:-/srv/hw9}}
START=$(date +%s)
step() { printf '%-10s %s\n' "$1" "$2"; }
fail() { printf 'hub setup FAILED at step "%s": %s\n  fix: %s\n' "$1" "$2" "$3" >&2; exit 1; }
quiet() {
  local log; log=$(mktemp)
  if "$@" >"$log" 2>&1; then rm -f "$log"; return 0; fi
  echo "---- last lines of: $*" >&2; tail -n 25 "$log" >&2; echo "----" >&2; rm -f "$log"; return 1
}

[ "$(id -u)" = 0 ] || fail prereqs "not running as root" \
  "run it with sudo: the hub starts each student's server as that student's own Unix account"
case "$HUB" in /*) ;; *) fail prereqs "HUB_ROOT must be an absolute path, got $HUB" "sudo deploy/setup-hub.sh /srv/hw9";; esac
SYSPY=${HW9_HUB_PYTHON:-/usr/bin/python3.11}
[ -x "$SYSPY" ] && "$SYSPY" -c 'import venv, ensurepip' 2>/dev/null ||
  fail prereqs "$SYSPY (a Python 3.11 every user can run, with venv) is missing" \
    "sudo apt-get install python3.11 python3.11-venv (or set HW9_HUB_PYTHON)"
command -v npm >/dev/null || fail prereqs "npm is missing (configurable-http-proxy is an npm package)" "sudo apt-get install npm"
command -v rustc >/dev/null && command -v cargo >/dev/null || fail prereqs "no Rust toolchain on PATH" "install Rust with rustup"
mkdir -p "$HUB/state" "$HUB/builds" && chmod 755 "$HUB" "$HUB/builds" && chmod 700 "$HUB/state" ||
  fail prereqs "cannot create $HUB" "check the disk and the path"
step prereqs "ok: $("$SYSPY" -V), $(rustc -V | cut -d' ' -f1-2), node $(node --version)"

# 1. The toolchain, where every student can run it (rustup keeps it in root's home, closed to them).
sysroot=$(rustc --print sysroot)
if [ -x "$HUB/rust/bin/cargo" ] && [ "$("$HUB/rust/bin/rustc" -V)" = "$(rustc -V)" ]; then
  step rust "ok: $(rustc -V) in $HUB/rust"
else
  rm -rf "$HUB/rust.tmp"
  { cp -al "$sysroot" "$HUB/rust.tmp" 2>/dev/null || cp -a "$sysroot" "$HUB/rust.tmp"; } &&
    chmod -R a+rX "$HUB/rust.tmp" && rm -rf "$HUB/rust" && mv "$HUB/rust.tmp" "$HUB/rust" ||
    fail rust "could not copy the toolchain $sysroot into $HUB/rust" "check the disk space (about 1.5 GB when not on the same filesystem)"
  step rust "ok: $(rustc -V) from $sysroot into $HUB/rust"
fi

# 2. CARGO_HOME for everyone: crates.io's files, seeded from root's cargo cache when there is one.
mkdir -p "$HUB/cargo"
if [ ! -d "$HUB/cargo/registry" ] && [ -d "${CARGO_HOME:-$HOME/.cargo}/registry" ]; then
  cp -al "${CARGO_HOME:-$HOME/.cargo}/registry" "$HUB/cargo/registry" 2>/dev/null ||
    cp -a "${CARGO_HOME:-$HOME/.cargo}/registry" "$HUB/cargo/registry" || true
fi
step cargo "ok: CARGO_HOME $HUB/cargo"

# 3. The hub's venv, with a Python every student can run.
want=$(cat "$REPO/deploy/requirements.txt" | sha256sum | cut -c1-16)
if [ "$(cat "$HUB/venv/.hw9-requirements" 2>/dev/null)" = "$want" ]; then
  step venv "ok: $HUB/venv up to date"
else
  [ -x "$HUB/venv/bin/python" ] || quiet "$SYSPY" -m venv "$HUB/venv" || fail venv "could not create $HUB/venv" "sudo apt-get install python3.11-venv"
  quiet "$HUB/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REPO/deploy/requirements.txt" ||
    fail venv "pip could not install deploy/requirements.txt" "check that PyPI (or PIP_INDEX_URL) is reachable"
  echo "$want" >"$HUB/venv/.hw9-requirements"
  step venv "ok: installed deploy/requirements.txt ($("$HUB/venv/bin/jupyterhub" --version))"
fi

# 4. The proxy.
mkdir -p "$HUB/proxy"
if cmp -s "$REPO/deploy/proxy/package-lock.json" "$HUB/proxy/package-lock.json" && [ -x "$HUB/proxy/node_modules/.bin/configurable-http-proxy" ]; then
  step proxy "ok: configurable-http-proxy up to date"
else
  cp "$REPO/deploy/proxy/package.json" "$REPO/deploy/proxy/package-lock.json" "$HUB/proxy/" &&
    (cd "$HUB/proxy" && quiet npm ci --omit=dev --no-audit --no-fund) ||
    fail proxy "npm ci failed in $HUB/proxy" "check that the npm registry is reachable"
  step proxy "ok: configurable-http-proxy $(cd "$HUB/proxy" && node -p 'require("configurable-http-proxy/package.json").version')"
fi

# 5. The course: the student handout, unpacked over the previous one (its venv, data and warm
#    build stay, so an update recompiles only what changed), then its own `make setup`, run with
#    the toolchain and CARGO_HOME the students' kernels will use.
TARBALL=${HW9_HUB_HANDOUT:-}
if [ -z "$TARBALL" ]; then
  (cd "$REPO" && quiet cargo run -q --locked --bin hw9 -- handout --out build/handout) ||
    fail course "make handout failed in $REPO" "run make handout in the repository to see why"
  TARBALL=$REPO/build/handout/hw9-handout.tar.gz
fi
[ -f "$TARBALL" ] || fail course "no handout at $TARBALL" "make handout, or set HW9_HUB_HANDOUT to a hw9-handout.tar.gz"
COURSE=$HUB/course
rm -rf "$HUB/unpack" && mkdir -p "$HUB/unpack" && tar -xzf "$TARBALL" -C "$HUB/unpack" ||
  fail course "could not unpack $TARBALL" "make handout again"
# The handout's content, not the tarball's bytes (a new `make handout` writes new timestamps):
# an unchanged course is left alone, so running this again disturbs no student.
sum=$(cd "$HUB/unpack/hw9" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$COURSE/.hw9-handout" 2>/dev/null)" = "$sum" ]; then
  rm -rf "$HUB/unpack"
  step course "ok: $COURSE holds this handout already"
else
  mkdir -p "$COURSE"
  # Replace what the handout ships; keep what setup made (.venv, .tools, .cache, installed data)
  # and the students' folders.
  for entry in "$HUB/unpack/hw9"/* "$HUB/unpack/hw9"/.[!.]*; do
    [ -e "$entry" ] || continue
    name=$(basename "$entry")
    case "$name" in .venv|.tools|.cache|student-*) continue;; esac
    if [ "$name" = assets ] && [ -d "$COURSE/assets" ]; then
      for a in "$entry"/*; do rm -rf "$COURSE/assets/$(basename "$a")"; mv "$a" "$COURSE/assets/"; done
      continue
    fi
    rm -rf "${COURSE:?}/$name" && mv "$entry" "$COURSE/$name"
  done
  rm -rf "$HUB/unpack"
  echo "$sum" >"$COURSE/.hw9-handout"
  step course "ok: unpacked $(basename "$TARBALL") into $COURSE"
fi
SETUP_ENV=(env -i HOME="$HOME" PATH="$HUB/rust/bin:/usr/local/bin:/usr/bin:/bin" CARGO_HOME="$HUB/cargo"
  HW9_CACHE="${HW9_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hw9}" LANG=C.UTF-8)
[ -n "${PIP_INDEX_URL:-}" ] && SETUP_ENV+=(PIP_INDEX_URL="$PIP_INDEX_URL")
step course "make setup in $COURSE (the first time: about 10 minutes, the kernel's warm build)..."
"${SETUP_ENV[@]}" make -C "$COURSE" --no-print-directory setup 2>&1 | sed 's/^/           /' || true
[ -d "$COURSE/.cache/evcxr/seed" ] && [ -f "$COURSE/jupyter/kernels/hw9-rust/kernel.json" ] ||
  fail course "the course's make setup did not finish" "read the lines above; fix, then rerun deploy/setup-hub.sh"
# Students read the course and never write into it; their folders stay theirs (0700).
find "$COURSE" -mindepth 1 -maxdepth 1 ! -name 'student-*' -exec chmod -R a+rX,go-w {} + && chmod 755 "$COURSE" ||
  fail course "could not make $COURSE readable" "check the filesystem"
step course "ok: $COURSE set up ($(du -sh --exclude='student-*' "$COURSE" | cut -f1))"

# 6. The hub's configuration and its start script.
cp "$REPO/deploy/jupyterhub_config.py" "$REPO/deploy/hw9_hub.py" "$HUB/" && chmod 644 "$HUB/jupyterhub_config.py" "$HUB/hw9_hub.py"
cat >"$HUB/start-hub" <<EOF
#!/bin/sh
# Starts hw9's JupyterHub (settings: $HUB/jupyterhub_config.py and the HW9_HUB_* variables in it).
cd "$HUB/state" && exec "$HUB/venv/bin/jupyterhub" -f "$HUB/jupyterhub_config.py" "\$@"
EOF
chmod 755 "$HUB/start-hub"
step config "ok: $HUB/jupyterhub_config.py, start with $HUB/start-hub"
echo "hub setup: done in $(( $(date +%s) - START )) s"
