#!/usr/bin/env bash
# run.sh — the main job: set up (installs missing Debian packages), build, then train an LSTM
# on the embedded Reber grammar until it is solved. Extra arguments go to `tapegrad train`.
set -euo pipefail
. "$(dirname "$0")/scripts/setup.sh"
tg_install
tg_build build --buildtype=release
exec "$TG_ROOT/build/tools/tapegrad" train "$@"
