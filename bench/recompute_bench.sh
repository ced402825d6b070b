#!/bin/sh
# recompute_bench.sh — peak memory and time per step of an LSTM training step on long sequences
# (B = 32, H = 256, float32, one thread): tapegrad plain vs --recompute K (K ≈ √T), and PyTorch
# plain vs torch.utils.checkpoint over the same K-step segments.
#
#   bench/recompute_bench.sh [--build DIR] [--T "1000 10000"] [--reps N] [--steps "S1 S2"] [--no-torch]
#
# Each measurement is its own process (bench/recompute_bench.c, bench/torch_recompute.py), so its
# peak RSS is that mode's. The modes run alternately, tapegrad plain, tapegrad recompute, torch
# plain, torch checkpoint, repeated --reps times, so that a busy machine's drift hits every mode;
# the summary gives each ratio as the median over repetitions with its range (of the processes'
# median steps, and of their best steps, which a loaded machine disturbs less). Raw lines go to
# bench/results/<date>-recompute/raw.txt.
set -eu
cd "$(dirname "$0")/.."
build=build
Ts="1000 10000"
reps=3
steps="5 2"          # timed steps per process, per T in order
torch=1
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build="$2"; shift 2 ;;
    --T) Ts="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    *) echo "recompute_bench.sh: unknown argument '$1'" >&2; exit 1 ;;
    esac
done
exe="$build/bench/recompute_bench"
[ -x "$exe" ] || { echo "recompute_bench.sh: $exe is not built (ninja -C $build)" >&2; exit 1; }
out="bench/results/$(date -u +%Y%m%d-%H%M%S)-recompute"
mkdir -p "$out"
raw="$out/raw.txt"
export OMP_NUM_THREADS=1
B=32
H=256
{
    echo "# $(date -u) $(uname -m) $(nproc --all) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
} >"$raw"
for rep in $(seq "$reps"); do
    i=0
    for T in $Ts; do
        i=$((i + 1))
        S=$(echo "$steps" | cut -d' ' -f"$i")
        [ -n "$S" ] || S=2
        K=$(/usr/bin/python3 -c "import math; print(max(1, round(math.sqrt($T))))")
        for mode in plain recompute torch-plain torch-checkpoint; do
            case "$mode" in
            plain) line=$("$exe" "$T" $B $H 0 "$S") ;;
            recompute) line=$("$exe" "$T" $B $H "$K" "$S") ;;
            torch-plain) [ $torch = 1 ] || continue; line=$(/usr/bin/python3 bench/torch_recompute.py "$T" $B $H 0 "$S" 2>/dev/null) ;;
            torch-checkpoint) [ $torch = 1 ] || continue; line=$(/usr/bin/python3 bench/torch_recompute.py "$T" $B $H "$K" "$S" 2>/dev/null) ;;
            esac
            echo "rep=$rep side=$mode $line" | tee -a "$raw"
        done
    done
done
/usr/bin/python3 - "$raw" <<'EOF' | tee "$out/summary.txt"
import re, statistics, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.strip()); continue
    rows.append(dict(re.findall(r"(\w+)=(\S+)", line)))
def get(T, side, rep, key):
    for r in rows:
        if r["T"] == T and r["side"] == side and r["rep"] == rep:
            return float(r[key])
    return None
def ratio(T, a, b, key):
    v = []
    for rep in sorted({r["rep"] for r in rows}):
        x, y = get(T, a, rep, key), get(T, b, rep, key)
        if x and y: v.append(x / y)
    return v
def fmt(v):
    return "%.2f (%.2f–%.2f)" % (statistics.median(v), min(v), max(v)) if v else "—"
def fmt_cpu(T, a, b):
    return fmt(ratio(T, a, b, "cpu_ms"))
def med(T, side, key):
    v = [float(r[key]) for r in rows if r["T"] == T and r["side"] == side]
    return statistics.median(v) if v else None
for T in sorted({r["T"] for r in rows}, key=int):
    K = [r["K"] for r in rows if r["T"] == T and r["side"] == "recompute"]
    print("T=%s B=32 H=256, K=%s" % (T, K[0] if K else "?"))
    for side in ("plain", "recompute", "torch-plain", "torch-checkpoint"):
        t, p, b = med(T, side, "median_ms"), med(T, side, "peak_rss_mb"), med(T, side, "base_rss_mb")
        c = med(T, side, "cpu_ms")
        if t is not None:
            print("  %-17s %9.0f ms/step (CPU %7.0f ms)   peak RSS %7.0f MB (baseline %4.0f MB)"
                  % (side, t, c or 0, p, b))
    print("  time   recompute / plain          %s   best step: %s" % (fmt(ratio(T, "recompute", "plain", "median_ms")),
                                                              fmt(ratio(T, "recompute", "plain", "min_ms"))))
    print("  time   torch-ckpt / torch-plain   %s   best step: %s" % (fmt(ratio(T, "torch-checkpoint", "torch-plain", "median_ms")),
                                                              fmt(ratio(T, "torch-checkpoint", "torch-plain", "min_ms"))))
    print("  time   torch-ckpt / recompute     %s" % fmt(ratio(T, "torch-checkpoint", "recompute", "median_ms")))
    print("  CPU    recompute / plain          %s" % fmt_cpu(T, "recompute", "plain"))
    print("  CPU    torch-ckpt / torch-plain   %s" % fmt_cpu(T, "torch-checkpoint", "torch-plain"))
    print("  CPU    torch-ckpt / recompute     %s" % fmt_cpu(T, "torch-checkpoint", "recompute"))
    print("  CPU    torch-plain / plain        %s" % fmt_cpu(T, "torch-plain", "plain"))
    print("  memory recompute / plain (peak)   %s" % fmt(ratio(T, "recompute", "plain", "peak_rss_mb")))
    print("  memory torch-ckpt / recompute     %s" % fmt(ratio(T, "torch-checkpoint", "recompute", "peak_rss_mb")))
EOF
echo "raw lines and summary: $out"
