#!/usr/bin/env bash
# mpi_bench.sh — what data parallelism costs on this machine (issue 16): ms per training step of
# an LSTM at the sizes of `tapegrad bench` (T·B·H, I = H, float32), as
#   1 rank × 2 threads   tapegrad train --threads 2                      (the whole batch at once)
#   2 ranks × 1 thread   mpirun -np 2 tapegrad train --threads 1 --micro-batches 2
#   1 rank × 1 thread    the reference both are measured against
# alternated A B A B so that a shared machine's drift hits both alike, plus the bytes each rank
# receives per step and the share of time in MPI_Allgatherv. The step is `train`'s on the text
# task (the vocabulary of README.md, V ≈ 100, not bench's 64) with --seq T --batch B
# --hidden H --embed H; ms/step comes from the --log CSV's seconds between the first and the
# last step, so start-up and the final evaluation are left out.
#   bench/mpi_bench.sh [OUTDIR]        (default bench/results/<date>-mpi)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TG=$ROOT/build/tools/tapegrad
OUT=${1:-$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-mpi}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe --bind-to none -np 2"
cp "$ROOT/README.md" "$OUT/data.txt" # a snapshot: the same vocabulary in every run
DATA=$OUT/data.txt
{ date -u; git -C "$ROOT" rev-parse HEAD; nproc; cat /proc/loadavg; } >"$OUT/meta.txt"
CONFIGS=${CONFIGS:-"T50B32H128:40 T50B32H256:20 T35B20H1024:8 T100B64H512:5 T35B20H2048:3"}
REPEATS=${REPEATS:-3}

# ms per step between the first and the last row of a log
ms_per_step() {
    awk -F, 'NR == 2 {s0 = $NF; n0 = $1} END {printf "%.1f", 1000 * ($NF - s0) / ($1 - n0)}' "$1"
}

run() { # run MODE CFG REP COMMON…
    local mode=$1 cfg=$2 rep=$3
    shift 3
    local log=$OUT/$cfg-$mode-$rep
    case $mode in
    1x1) "$TG" train --threads 1 "$@" --log "$log.csv" >/dev/null 2>"$log.err" ;;
    1x2) "$TG" train --threads 2 "$@" --log "$log.csv" >/dev/null 2>"$log.err" ;;
    2x1) $MPIRUN "$TG" train --threads 1 --micro-batches 2 "$@" --log "$log.csv" >/dev/null 2>"$log.err" ;;
    esac
    local ex
    ex=$(grep -o 'exchange: [0-9.]* MiB.*' "$log.err" | sed 's/exchange: \([0-9.]*\) MiB.*, \([0-9.]*\)% .*/\1 MiB, \2%/' || true)
    echo "$cfg $mode $rep $(ms_per_step "$log.csv") ${ex:--}" | tee -a "$OUT/runs.txt"
}

: >"$OUT/runs.txt"
for spec in $CONFIGS; do
    cfg=${spec%%:*} steps=${spec##*:}
    T=$(sed 's/T\([0-9]*\)B.*/\1/' <<<"$cfg") B=$(sed 's/.*B\([0-9]*\)H.*/\1/' <<<"$cfg") H=${cfg##*H}
    common=(--task text --data "$DATA" --cell lstm --seq "$T" --batch "$B" --hidden "$H" --embed "$H"
            --steps $((steps + 1)) --eval-every 1000000 --eval-size 1 --overwrite)
    for rep in $(seq "$REPEATS"); do
        for mode in ${MODES:-1x1 1x2 2x1}; do run "$mode" "$cfg" "$rep" "${common[@]}"; done
    done
done
# medians per config and mode, and the ratios
python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/table.txt"
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[0], {}).setdefault(f[1], []).append(float(f[3]))
print(f"{'config':12} {'1x1 ms':>9} {'1x2 ms':>9} {'2x1 ms':>9} {'1x2/2x1':>8} {'1x1/2x1':>8}")
for cfg, modes in runs.items():
    m = {k: statistics.median(v) for k, v in modes.items()}
    a, b, c = m.get("1x1", 0), m.get("1x2", 0), m.get("2x1", 0)
    print(f"{cfg:12} {a:9.1f} {b:9.1f} {c:9.1f} {b / c if c else 0:8.2f} {a / c if c else 0:8.2f}")
PY
