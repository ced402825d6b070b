#!/usr/bin/env bash
# mpi_bench.sh — what data parallelism costs on this machine (issue 16): ms per training step of
# an LSTM at the sizes of `tapegrad bench` (T·B·H, I = H, float32), as
#   1 rank × 2 threads   tapegrad train --threads 2                      (the whole batch at once)
#   2 ranks × 1 thread   mpirun -np 2 tapegrad train --threads 1 --micro-batches 2
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
DATA=$ROOT/README.md
CONFIGS=${CONFIGS:-"T50B32H128:40 T50B32H256:20 T35B20H1024:8 T100B64H512:6"}
REPEATS=${REPEATS:-2}

# ms per step between the first and the last row of a log
ms_per_step() {
    awk -F, 'NR == 2 {s0 = $NF; n0 = $1} END {printf "%.1f", 1000 * ($NF - s0) / ($1 - n0)}' "$1"
}

echo "config mode ms_per_step exchange" | tee "$OUT/table.txt"
for spec in $CONFIGS; do
    cfg=${spec%%:*} steps=${spec##*:}
    T=$(sed 's/T\([0-9]*\)B.*/\1/' <<<"$cfg") B=$(sed 's/.*B\([0-9]*\)H.*/\1/' <<<"$cfg") H=${cfg##*H}
    common="--task text --data $DATA --cell lstm --seq $T --batch $B --hidden $H --embed $H --steps $((steps + 1)) --eval-every 1000000 --eval-size 1 --overwrite"
    for rep in $(seq "$REPEATS"); do
        "$TG" train --threads 2 $common --log "$OUT/$cfg-1x2-$rep.csv" >/dev/null 2>"$OUT/$cfg-1x2-$rep.err"
        echo "$cfg 1rank×2threads $(ms_per_step "$OUT/$cfg-1x2-$rep.csv") -" | tee -a "$OUT/table.txt"
        $MPIRUN "$TG" train --threads 1 --micro-batches 2 $common --log "$OUT/$cfg-2x1-$rep.csv" \
            >/dev/null 2>"$OUT/$cfg-2x1-$rep.err"
        ex=$(grep -o 'exchange: .*' "$OUT/$cfg-2x1-$rep.err" | tr ' ' '_')
        echo "$cfg 2ranks×1thread $(ms_per_step "$OUT/$cfg-2x1-$rep.csv") $ex" | tee -a "$OUT/table.txt"
    done
done
