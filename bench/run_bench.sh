#!/usr/bin/env bash
# run_bench.sh — tapegrad against PyTorch and against the hand-written BPTT, side by side, at the
# same thread counts, on the same OpenBLAS (see bench/README.md).
#
#   bench/run_bench.sh [--quick] [--threads "1 2"] [--build DIR] [--out DIR] [--no-torch]
#                      [--torch-blas openmp|system] [--coretype native|keep]
#                      [--tg-coretype native|keep] [--torch-coretype native|keep]
#                      [--no-scaling] [--no-memory] [--no-minchar] [--text FILE] [--clock wall|cpu]
#   bench/run_bench.sh --report DIR     (re-print the table of an earlier run's results)
#
# For each thread count N and each config, in turn: `tapegrad bench --threads N --config C
# --json …` under a preloaded counting allocator (bench/malloc_count.so, built here), then
# bench/torch_bench.py --threads N --config C --json …. Alternating per config keeps the two
# sides of each tapegrad/torch ratio seconds apart, not minutes, on a machine whose speed
# drifts. Each side times at least 20 steps per config after warm-up. The per-config JSON files
# are merged into tapegrad-tN.json and torch-tN.json, and one table joins them. Every raw
# output goes to the --out directory (default bench/results/<date>-<full|quick>/).
#   --quick           configs T50B32H128, T50B32H256, T100B1H8 (no H512/H1024), no scaling
#                     series: a few minutes (each config starts both programs afresh).
#   --torch-blas      openmp (default): torch loads the OpenMP flavour of OpenBLAS (through
#                     LD_LIBRARY_PATH, for its command only), the very library tapegrad links, so
#                     both sides run the same BLAS binary and the same libgomp thread pool;
#                     system: whatever Debian's libblas.so.3 alternative points to (the pthread
#                     flavour by default), whose pool spins against torch's OpenMP one.
#   --torch-coretype  native (default): unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for torch's
#                     command alone, so its OpenBLAS picks its kernels by CPUID, as it would for
#                     a user; keep: run it under the inherited values (this workplace pins some
#                     CPUs to an older kernel set).
#   --tg-coretype     the same for tapegrad's commands (default native: both sides choose their
#                     best; on this machine CPUID gives Cooperlake, faster than the inherited
#                     Haswell on every B > 1 config, bench/README.md).
#   --clock           wall (default) or cpu: every program times steps in its process's CPU
#                     time, which time slices taken by other processes on a loaded machine do not
#                     inflate (1 thread: the work itself; cache contention still counts).
#   --coretype        sets both. The core each side ran is printed in meta.txt and the table.
#   memory rows       T1000B32H128 for the three cells (3 timed steps; tape memory against the
#                     minimum and peak-RSS rise on each side); --no-memory skips them.
#   min-char-rnn      bench/minchar_bench (tapegrad) and bench/minchar_numpy.py (/usr/bin/python3
#                     with python3-numpy) on --text FILE (default README.md), alternated three
#                     times each; --no-minchar skips it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 THREADS="1 2" BUILD="" OUT="" TORCH=1 TORCH_BLAS=openmp SCALING=1 REPORT=""
TG_CORETYPE=native PT_CORETYPE=native MEMORY=1 MINCHAR=1 TEXT="$ROOT/README.md" CLOCK=wall

usage() { sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; }
coretype_arg() {
    case "$2" in native|keep) ;; *) echo "run_bench.sh: $1 native|keep, got '$2'" >&2; exit 2 ;; esac
}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --threads) THREADS=${2:?--threads needs a list, e.g. \"1 2\"}; shift ;;
        --build) BUILD=${2:?--build needs a directory}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        --no-torch) TORCH=0 ;;
        --no-scaling) SCALING=0 ;;
        --report) REPORT=${2:?--report needs a results directory}; shift ;;
        --torch-blas) TORCH_BLAS=${2:?}; shift
                      case "$TORCH_BLAS" in openmp|system) ;; *) echo "run_bench.sh: --torch-blas openmp|system" >&2; exit 2 ;; esac ;;
        --coretype) coretype_arg "$1" "${2:-}"; TG_CORETYPE=$2 PT_CORETYPE=$2; shift ;;
        --tg-coretype) coretype_arg "$1" "${2:-}"; TG_CORETYPE=$2; shift ;;
        --torch-coretype) coretype_arg "$1" "${2:-}"; PT_CORETYPE=$2; shift ;;
        --no-memory) MEMORY=0 ;;
        --clock) CLOCK=${2:-}; shift
                 case "$CLOCK" in wall|cpu) ;; *) echo "run_bench.sh: --clock wall|cpu" >&2; exit 2 ;; esac ;;
        --no-minchar) MINCHAR=0 ;;
        --text) TEXT=${2:?--text needs a file}; shift
                [ -r "$TEXT" ] || { echo "run_bench.sh: --text: cannot read '$TEXT'" >&2; exit 2; } ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in $THREADS; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run_bench.sh: --threads: '$n' is not a positive integer" >&2; exit 2; }
done

# --report: only the table, from the JSON files of an earlier run.
if [ -n "$REPORT" ]; then
    [ -f "$REPORT/meta.txt" ] || { echo "run_bench.sh: $REPORT has no meta.txt (not a run_bench.sh results directory)" >&2; exit 1; }
    OUT=$REPORT
    THREADS=$(ls "$OUT" | sed -n 's/^tapegrad-t\([0-9]*\)\.json$/\1/p' | sort -n | tr '\n' ' ')
    [ -n "$THREADS" ] || { echo "run_bench.sh: no tapegrad-t*.json in $OUT" >&2; exit 1; }
fi

# Build (release) unless a build directory is given.
if [ -n "$REPORT" ]; then
    :
elif [ -z "$BUILD" ]; then
    . "$ROOT/scripts/setup.sh"
    tg_install
    tg_build build --buildtype=release
    BUILD="$ROOT/build"
else
    ninja -C "$BUILD" >&2
fi
if [ -z "$REPORT" ]; then
TAPEGRAD="$BUILD/tools/tapegrad"
[ -x "$TAPEGRAD" ] || { echo "run_bench.sh: $TAPEGRAD not found" >&2; exit 1; }
MALLOC_SO="$BUILD/malloc_count.so"
cc -O2 -shared -fPIC -o "$MALLOC_SO" "$ROOT/bench/malloc_count.c"

MODE=$([ $QUICK = 1 ] && echo quick || echo full)
OUT=${OUT:-"$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)-$MODE"}
mkdir -p "$OUT"

if [ $QUICK = 1 ]; then
    CONFIGS="T50B32H128 T50B32H256 T100B1H8"
    TG_ARGS=(--repeats 20 --warmup 2)
    PT_ARGS=(--repeats 20 --warmup 2)
    SCALING=0
else
    CONFIGS="T50B32H128 T50B32H256 T100B64H512 T35B20H1024 T100B1H8"
    TG_ARGS=()
    PT_ARGS=()
fi
TG_ARGS+=(--clock "$CLOCK")
PT_ARGS+=(--clock "$CLOCK")

# Each side's OpenBLAS environment (see --tg-coretype / --torch-coretype).
ENV_BLAS=() PT_ENV_BLAS=()
if [ "$TG_CORETYPE" = native ]; then ENV_BLAS=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE); fi
if [ "$PT_CORETYPE" = native ]; then PT_ENV_BLAS=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE); fi
PT_ENV=()
OMP_BLAS_DIR=/usr/lib/$(gcc -dumpmachine)/openblas-openmp
if [ "$TORCH_BLAS" = openmp ]; then
    [ -e "$OMP_BLAS_DIR/libblas.so.3" ] || { echo "run_bench.sh: $OMP_BLAS_DIR/libblas.so.3 missing (apt-get install libopenblas0-openmp)" >&2; exit 1; }
    PT_ENV=("LD_LIBRARY_PATH=$OMP_BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi
if [ $TORCH = 1 ] && ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo "run_bench.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); running without it" >&2
    TORCH=0
fi

{
    echo "# run_bench.sh $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    ct() { [ "$1" = native ] && echo "unset (CPUID)" || echo "${OPENBLAS_CORETYPE:-unset} (inherited)"; }
    echo "# threads: $THREADS; torch BLAS: $TORCH_BLAS; OPENBLAS_CORETYPE for tapegrad: $(ct "$TG_CORETYPE"), for torch: $(ct "$PT_CORETYPE")"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/meta.txt"

for n in $THREADS; do
    rm -f "$OUT"/part-*-t"$n"-*.json   # parts of an earlier run into the same --out
    : > "$OUT/tapegrad-t$n.txt"
    [ $TORCH = 1 ] && : > "$OUT/torch-t$n.txt"
    for cfg in $CONFIGS; do
        echo "== tapegrad bench, $n thread(s), $cfg"
        env "${ENV_BLAS[@]}" LD_PRELOAD="$MALLOC_SO" "$TAPEGRAD" bench --threads "$n" --config "$cfg" \
            "${TG_ARGS[@]}" --json "$OUT/part-tapegrad-t$n-$cfg.json" | tee -a "$OUT/tapegrad-t$n.txt"
        if [ $TORCH = 1 ]; then
            echo "== torch_bench.py, $n thread(s), $cfg"
            env "${PT_ENV_BLAS[@]}" "${PT_ENV[@]}" /usr/bin/python3 "$ROOT/bench/torch_bench.py" --threads "$n" \
                --config "$cfg" "${PT_ARGS[@]}" --json "$OUT/part-torch-t$n-$cfg.json" | tee -a "$OUT/torch-t$n.txt"
        fi
    done
    if [ $SCALING = 1 ] && [ "$n" = "$(echo $THREADS | cut -d' ' -f1)" ]; then
        echo "== tapegrad bench, $n thread(s), scaling in T"
        env "${ENV_BLAS[@]}" LD_PRELOAD="$MALLOC_SO" "$TAPEGRAD" bench --threads "$n" --config none \
            --cell lstm --scaling --clock "$CLOCK" --json "$OUT/part-tapegrad-t$n-scaling.json" | tee -a "$OUT/tapegrad-t$n.txt"
        if [ $TORCH = 1 ]; then
            env "${PT_ENV_BLAS[@]}" "${PT_ENV[@]}" /usr/bin/python3 "$ROOT/bench/torch_bench.py" --threads "$n" \
                --cell lstm --impl nn --config T10B32H128,T100B32H128,T1000B32H128 --clock "$CLOCK" \
                --json "$OUT/torch-scaling-t$n.json" | tee "$OUT/torch-scaling-t$n.txt"
        fi
    fi
    if [ $MEMORY = 1 ] && [ "$n" = "$(echo $THREADS | cut -d' ' -f1)" ]; then
        # T = 1000: memory more than time (3 timed steps; a step takes about a second)
        echo "== tapegrad bench, $n thread(s), T1000B32H128 (memory)"
        env "${ENV_BLAS[@]}" LD_PRELOAD="$MALLOC_SO" "$TAPEGRAD" bench --threads "$n" --config T1000B32H128 \
            --repeats 3 --warmup 1 --clock "$CLOCK" --json "$OUT/memory-tapegrad-t$n.json" | tee -a "$OUT/tapegrad-t$n.txt"
        if [ $TORCH = 1 ]; then
            env "${PT_ENV_BLAS[@]}" "${PT_ENV[@]}" /usr/bin/python3 "$ROOT/bench/torch_bench.py" --threads "$n" \
                --impl nn --config T1000B32H128 --repeats 3 --warmup 1 --clock "$CLOCK" \
                --json "$OUT/memory-torch-t$n.json" | tee -a "$OUT/torch-t$n.txt"
        fi
    fi
    if [ $MINCHAR = 1 ] && [ "$n" = "$(echo $THREADS | cut -d' ' -f1)" ]; then
        if ! /usr/bin/python3 -c "import numpy" 2>/dev/null; then
            echo "run_bench.sh: /usr/bin/python3 cannot import numpy (apt-get install python3-numpy); no min-char-rnn rows" >&2
        else
            echo "== min-char-rnn ($TEXT): tapegrad and NumPy alternated, 3 runs each"
            for rep in 1 2 3; do
                env "${ENV_BLAS[@]}" "$BUILD/bench/minchar_bench" --data "$TEXT" --threads "$n" --clock "$CLOCK" \
                    --json "$OUT/minchar-tapegrad-$rep.json" | tee -a "$OUT/minchar.txt"
                env "${PT_ENV_BLAS[@]}" OMP_NUM_THREADS="$n" OPENBLAS_NUM_THREADS="$n" /usr/bin/python3 \
                    "$ROOT/bench/minchar_numpy.py" --data "$TEXT" --clock "$CLOCK" --json "$OUT/minchar-numpy-$rep.json" \
                    | tee -a "$OUT/minchar.txt"
            done
        fi
    fi
    # one JSON per side and thread count, as the table (and --report) read them
    python3 - "$OUT" "$n" $CONFIGS scaling <<'MERGE'
import glob, json, os, sys
out, n, order = sys.argv[1], sys.argv[2], sys.argv[3:]
rank = lambda p: order.index(p.rsplit("-", 1)[1][:-5]) if p.rsplit("-", 1)[1][:-5] in order else len(order)
parts = sorted(glob.glob(os.path.join(out, f"part-tapegrad-t{n}-*.json")), key=rank)
merged = None
for p in parts:
    d = json.load(open(p))
    if merged is None:
        merged = d
    else:
        merged["results"] += d["results"]
if merged is not None:
    json.dump(merged, open(os.path.join(out, f"tapegrad-t{n}.json"), "w"), indent=1)
rows = []
for p in sorted(glob.glob(os.path.join(out, f"part-torch-t{n}-*.json")), key=rank):
    rows += json.load(open(p))
if rows:
    json.dump(rows, open(os.path.join(out, f"torch-t{n}.json"), "w"), indent=1)
for p in parts + glob.glob(os.path.join(out, f"part-torch-t{n}-*.json")):
    os.remove(p)
MERGE
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/meta.txt"
fi   # not --report

# ---- the side-by-side table
python3 - "$OUT" $THREADS <<'EOF' | tee "$OUT/table.txt.new"
import json, os, sys

out, threads = sys.argv[1], [int(t) for t in sys.argv[2:]]

def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None

tg = {n: load(f"tapegrad-t{n}.json") for n in threads}
pt = {n: load(f"torch-t{n}.json") or [] for n in threads}
meta = open(os.path.join(out, "meta.txt")).read().strip().splitlines()

def torch_ms(n, impl, cell, config):
    for r in pt[n]:
        if r["impl"] == impl and r["cell"] == cell and r["config"] == config:
            return r["median_ms"]
    return None

def f(v, fmt="{:.2f}", none="-"):
    return none if v is None else fmt.format(v)

def main_rows(n):
    return [r for r in (tg[n] or {}).get("results", []) if r["series"] == "main"]

print()
print("\n".join(meta))
cols = ("config", "cell", "tapegrad ms", "manual ms", "torch nn ms", "torch loop ms",
        "tapegrad/torch", "autodiff/manual", "%sgemm", "allocs/step")
W = (12, 9, 12, 10, 12, 14, 15, 16, 7, 11)
line = lambda vals: " ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w) for i, (v, w) in enumerate(zip(vals, W)))
rows = {}
for n in threads:
    if tg[n] is None:
        continue
    pt_core = next((r.get("openblas_core") for r in pt[n] if r.get("openblas_core")), None)
    print(f"\n{n} thread(s) — medians of ms per training step; tapegrad/torch < 1 means tapegrad is "
          f"faster (vs torch nn.{{LSTM,GRU,RNN}}); OpenBLAS core: tapegrad {tg[n]['openblas_core']}, "
          f"torch {pt_core or '-'}; tapegrad gemm {tg[n].get('gemm', 'openblas')}"
          f"{' (libxsmm built in)' if tg[n].get('libxsmm') else ''}; "
          f"sgemm 1024³ {tg[n]['sgemm_1024_gflops']:.1f} GFLOP/s")
    print(line(cols))
    print("-" * (sum(W) + len(W) - 1))
    for r in sorted(main_rows(n), key=lambda r: (r["B"] == 1, r["T"] * r["B"] * r["H"], r["config"],
                                                  ("lstm", "gru", "rnn_tanh").index(r["cell"]))):
        t, m = r["tapegrad"], r["manual"]
        nn_ms = torch_ms(n, "torch_nn", r["cell"], r["config"])
        loop_ms = torch_ms(n, "torch_loop", r["cell"], r["config"])
        al = t["allocs_per_step"]
        rows[(n, r["cell"], r["config"])] = dict(r=r, nn=nn_ms, loop=loop_ms)
        print(line((r["config"], r["cell"], f(t["median_ms"], "{:.3f}"),
                    f(m and m["median_ms"], "{:.3f}"), f(nn_ms, "{:.3f}"), f(loop_ms, "{:.3f}"),
                    f(nn_ms and t["median_ms"] / nn_ms), f(r["autodiff_over_manual"] if m else None),
                    f(t["pct_sgemm"], "{:.0f}%"), "-" if al is None else f(al, "{:g}"))))

# 2-thread speedup at H = 512
if len(threads) >= 2:
    a, b = threads[0], threads[1]
    head = f"\nSpeed-up {b} threads over {a} at H=512 (T100B64H512): time({a}) / time({b})"
    for cell in ("lstm", "gru", "rnn_tanh"):
        x, y = rows.get((a, cell, "T100B64H512")), rows.get((b, cell, "T100B64H512"))
        if not x or not y:
            continue
        if head:
            print(head)
            head = None
        sp = lambda u, v: f(u / v if u and v else None)
        mx, my = x["r"]["manual"], y["r"]["manual"]
        print(f"  {cell:<9} tapegrad {sp(x['r']['tapegrad']['median_ms'], y['r']['tapegrad']['median_ms'])}×"
              f"   manual {sp(mx and mx['median_ms'], my and my['median_ms'])}×"
              f"   torch nn {sp(x['nn'], y['nn'])}×")

# scaling in T
n0 = threads[0]
sc = [r for r in (tg[n0] or {}).get("results", []) if r["series"] == "scaling"]
if sc:
    pts = load(f"torch-scaling-t{n0}.json") or []
    print(f"\nScaling in T, lstm B32 H128, {n0} thread(s): ms per step / T (should be flat)")
    print(f"{'T':>6} {'tapegrad':>12} {'manual':>12} {'torch nn':>12}")
    for r in sc:
        tn = next((p["median_ms"] for p in pts if p["T"] == r["T"]), None)
        m = r["manual"]
        print(f"{r['T']:>6} {r['tapegrad']['median_ms'] / r['T']:12.4f} "
              f"{f(m and m['median_ms'] / r['T'], '{:.4f}'):>12} {f(tn and tn / r['T'], '{:.4f}'):>12}")

# memory at T = 1000
mt, mp = load(f"memory-tapegrad-t{n0}.json"), load(f"memory-torch-t{n0}.json") or []
if mt:
    print(f"\nMemory at T = 1000, {n0} thread(s), MiB: tape after forward+backward against the minimum "
          f"a backward pass needs (gates, c, h per step), and the rise of peak RSS over the steps")
    print(f"{'config':<13} {'cell':<9} {'tape':>8} {'minimum':>8} {'tape/min':>8} {'manual ws/min':>13} "
          f"{'peak tapegrad':>13} {'peak manual':>11} {'peak torch nn':>13} {'ms tapegrad':>11} {'ms torch':>9}")
    for r in mt["results"]:
        tp = next((p for p in mp if p["cell"] == r["cell"] and p["config"] == r["config"]), None)
        kib = lambda v: "-" if v is None or v < 0 else f"{v / 1024:.0f}"
        m = r["manual"]
        print(f"{r['config']:<13} {r['cell']:<9} {r['arena_bytes'] / 2**20:8.1f} {r['arena_min_bytes'] / 2**20:8.1f} "
              f"{r['arena_bytes'] / r['arena_min_bytes']:8.2f} "
              f"{f(r['manual_ws_bytes'] / r['arena_min_bytes'] if m else None):>13} "
              f"{kib(r['rss_rise_kib_tapegrad']):>13} {kib(r['rss_rise_kib_manual'] if m else None):>11} "
              f"{kib(tp and tp.get('rss_rise_kib')):>13} {r['tapegrad']['median_ms']:11.0f} "
              f"{f(tp and tp['median_ms'], '{:.0f}'):>9}")

# min-char-rnn
mc = [(load(f"minchar-tapegrad-{i}.json"), load(f"minchar-numpy-{i}.json")) for i in (1, 2, 3)]
mc = [(a, b) for a, b in mc if a and b]
if mc:
    ratios = sorted(b["median_ms"] / a["median_ms"] for a, b in mc)
    print(f"\nmin-char-rnn (rnn_tanh, H 100, T 25, B 1, Adagrad, float64, V = {mc[0][1]['V']}), {n0} thread(s): "
          f"ms per step, median of each run, alternated")
    for i, (a, b) in enumerate(mc):
        print(f"  run {i + 1}: tapegrad {a['median_ms']:.3f} ({a['min_ms']:.3f}–{a['max_ms']:.3f})   "
              f"NumPy {b['median_ms']:.3f} ({b['min_ms']:.3f}–{b['max_ms']:.3f})   "
              f"NumPy/tapegrad {b['median_ms'] / a['median_ms']:.1f}×")
    print(f"  NumPy/tapegrad: median {ratios[len(ratios) // 2]:.1f}× (range {ratios[0]:.1f}–{ratios[-1]:.1f}×; "
          f"target >= 10×: {'met' if ratios[len(ratios) // 2] >= 10 else 'NOT met'}); first losses "
          f"{mc[0][0]['first_loss']:.4f} / {mc[0][1]['first_loss']:.4f}")

# the issue's targets, as measured in this run
print("\nTargets of issue 6 in this run (ratios within the run; a noisy machine moves them):")
def verdict(ok):
    return "met" if ok else "NOT met"
for n in threads:
    rs = [v for (k, _, _), v in rows.items() if k == n]
    if not rs:
        continue
    print(f"  {n} thread(s):")
    for lo, hi, spd, pct in ((1, 256, 1.4, 75), (512, 1 << 30, 1.1, 85)):
        sel = [v for v in rs if lo <= v["r"]["H"] <= hi and v["r"]["B"] > 1]
        if not sel:
            continue
        worst_spd = min((v["nn"] / v["r"]["tapegrad"]["median_ms"] for v in sel if v["nn"]), default=None)
        worst_pct = min(v["r"]["tapegrad"]["pct_sgemm"] for v in sel)
        rng = f"H {lo}–{hi}" if hi < 1 << 30 else f"H >= {lo}"
        print(f"    {rng}: slowest torch/tapegrad {f(worst_spd)}× (target >= {spd}×: "
              f"{verdict(worst_spd is not None and worst_spd >= spd)}); lowest %sgemm {worst_pct:.0f}% "
              f"(target >= {pct}%: {verdict(worst_pct >= pct)})")
    adm = [v["r"]["autodiff_over_manual"] for v in rs if v["r"]["manual"]]
    if adm:
        print(f"    autodiff/manual worst {max(adm):.2f} (target <= 1.10: {verdict(max(adm) <= 1.10)})")
    tiny = [v["r"] for v in rs if v["r"]["config"] == "T100B1H8"]
    for r in tiny:
        ov = (r["tapegrad"]["median_ms"] - r["manual"]["median_ms"]) * 1e3 / r["nodes"] if r["manual"] else None
        print(f"    tiny {r['cell']}: {r['tapegrad']['median_ms']:.3f} ms/step (target <= 0.5: "
              f"{verdict(r['tapegrad']['median_ms'] <= 0.5)}); {r['nodes']} nodes, "
              f"(tapegrad − manual)/node {f(ov, '{:.3f}')} µs (target <= 0.2: {verdict(ov is not None and ov <= 0.2)})")
    al = [v["r"]["tapegrad"]["allocs_per_step"] for v in rs]
    if all(a is not None for a in al):
        print(f"    heap allocations per step: max {max(al):g} (target 0: {verdict(max(al) == 0)})")
    tm = max(((v["r"]["arena_bytes"] / v["r"]["arena_min_bytes"], v["r"]["cell"], v["r"]["config"])
              for v in rs if v["r"]["B"] > 1), default=None)
    if tm:
        print(f"    tape memory / minimum (gates, c, h), B > 1: worst {tm[0]:.2f} ({tm[1]} {tm[2]}; "
              f"target <= 1.3: {verdict(tm[0] <= 1.3)})")
EOF
mv "$OUT/table.txt.new" "$OUT/table.txt"
echo "results in $OUT"
