#!/usr/bin/env bash
# setup.sh — install what is missing (Debian packages), then configure and build.
# Sourced by run.sh and test.sh; safe to run again: it only installs and rebuilds what changed.
set -euo pipefail

TG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build: compiler, meson, ninja. Libraries: cmocka (tests), OpenBLAS with its OpenMP flavour
# (see meson.build for why), jansson (safetensors headers), Graphviz (rendering DOT), Open MPI
# (data-parallel training: `mpirun -np N tapegrad train`, and its tests), PLplot with its cairo
# driver (PNG/SVG plots of tapegrad flow and train --plot), libxsmm (JIT kernels for the small
# per-step GEMMs, autograd/blas.c; optional in meson.build, OpenBLAS does everything without it).
TG_PACKAGES=(gcc libc6-dev pkg-config meson ninja-build python3
             libcmocka-dev libopenblas-dev libopenblas0-openmp libxsmm-dev libjansson-dev
             graphviz libgraphviz-dev openmpi-bin libopenmpi-dev libplplot-dev plplot-driver-cairo)

tg_missing_packages() {
    local p missing=()
    for p in "${TG_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    echo "${missing[@]:-}"
}

tg_install() {
    local missing
    missing=$(tg_missing_packages)
    [ -z "$missing" ] && return 0
    echo "setup: installing Debian packages: $missing" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: $missing" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
}

# tg_build DIR [meson options…]: configure once, then build incrementally.
tg_build() {
    local dir=$1
    shift
    if [ ! -f "$TG_ROOT/$dir/build.ninja" ]; then
        meson setup "$TG_ROOT/$dir" "$TG_ROOT" "$@" >&2
    fi
    ninja -C "$TG_ROOT/$dir" >&2
}
