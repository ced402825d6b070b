#!/usr/bin/python3
"""torch_bench.py — the PyTorch half of tapegrad's training-step benchmark (issue 6).

Run with Debian's python3-torch (1.13):

    /usr/bin/python3 bench/torch_bench.py [--cell lstm,gru,rnn_tanh] [--config T50B32H128,…]
                                          [--impl nn,loop] [--threads N] [--repeats R]
                                          [--warmup W] [--json FILE]

One training step, float32, exactly what `tapegrad bench` times on its side:

    logits = Linear(H, V)(RNN(x))                 x (T, B, I), I = H, V = 64, zero initial state
    loss   = Σ_{t,b} cross_entropy(logits[t,b], y[t,b])        (summed over all T·B tokens)
    loss.backward();  SGD step (p -= lr·grad)

Implementations (--impl):
    nn     nn.LSTM / nn.GRU / nn.RNN(tanh), one layer, sequence-first: PyTorch's own CPU kernels
    loop   lstm only: the LSTM cell composed of torch ops in a Python loop over t,
               gates = x_t W_ihᵀ + h W_hhᵀ + b;  i, f, g, o = chunk(gates, 4)
               c = σ(f)⊙c + σ(i)⊙tanh(g);  h = σ(o)⊙tanh(c)
           — what a user who writes a custom cell in PyTorch gets (autograd tape, no fusion).

Configs are named T<steps>B<batch>H<hidden>; the issue's set is the default. Any name of that
form is accepted (e.g. T10B32H128, T1000B32H128 for the scaling series).

Timing: --warmup steps first (default 3), then --repeats timed steps (default: as many as fit in
about 2 s after warm-up, at least 20, at most 200). Each step is timed alone with
time.perf_counter (--clock cpu: time.process_time, the process's CPU time); reported are the median and the min–max in ms/step and tokens/s = T·B / median.
Threads: torch.set_num_threads(N) (default 1), and the same count for the OpenBLAS that torch
loaded, through its openblas_set_num_threads (see openblas_info; --blas-threads leave skips it).
OPENBLAS_* and *_NUM_THREADS environment variables are printed but never changed: run tapegrad
and this script under the same environment.

Memory: the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs before
each measurement, as `tapegrad bench` does) over the warm-up and timed steps: what torch keeps
for forward and backward, its caching allocator included.

--json FILE writes a list of {impl, cell, config, threads, median_ms, min_ms, max_ms,
tokens_per_s, T, B, H, V, repeats, os_threads, rss_rise_kib, openblas_core} for `tapegrad bench` to read and print ratios
side by side (os_threads: threads the process had after the run). Only the standard library and
torch are imported.
"""

import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CELLS = ("lstm", "gru", "rnn_tanh")
CONFIGS = ("T50B32H128", "T50B32H256", "T100B64H512", "T35B20H1024", "T100B1H8")
IMPLS = ("nn", "loop")
V = 64          # output classes
LR = 1e-4       # small enough that repeated steps stay finite and away from denormals


def parse_config(name):
    m = re.fullmatch(r"T(\d+)B(\d+)H(\d+)", name)
    if not m or min(int(g) for g in m.groups()) < 1:
        raise ValueError(f"--config: '{name}' is not of the form T<steps>B<batch>H<hidden> "
                         f"(e.g. T50B32H128)")
    return tuple(int(g) for g in m.groups())


class NNModel(nn.Module):
    def __init__(self, cell, H):
        super().__init__()
        if cell == "lstm":
            self.rnn = nn.LSTM(H, H, 1)
        elif cell == "gru":
            self.rnn = nn.GRU(H, H, 1)
        else:
            self.rnn = nn.RNN(H, H, 1, nonlinearity="tanh")
        self.out = nn.Linear(H, V)

    def forward(self, x):
        hs, _ = self.rnn(x)
        return self.out(hs)


class LoopLSTM(nn.Module):
    """LSTM cell written with torch ops, unrolled by a Python loop (gate order i, f, g, o)."""

    def __init__(self, H):
        super().__init__()
        k = H ** -0.5       # PyTorch's LSTM init: U(−1/√H, 1/√H)
        self.W_ih = nn.Parameter(torch.empty(4 * H, H).uniform_(-k, k))
        self.W_hh = nn.Parameter(torch.empty(4 * H, H).uniform_(-k, k))
        self.b = nn.Parameter(torch.empty(4 * H).uniform_(-k, k))
        self.out = nn.Linear(H, V)

    def forward(self, x):
        T, B, H = x.shape
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        hs = []
        for t in range(T):
            gates = x[t] @ self.W_ih.t() + h @ self.W_hh.t() + self.b
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        return self.out(torch.stack(hs))


CLOCK = time.perf_counter   # --clock cpu: time.process_time (this process's CPU time)


def bench_one(impl, cell, config, threads, repeats, warmup, seed=0):
    T, B, H = parse_config(config)
    torch.manual_seed(seed)
    model = LoopLSTM(H) if impl == "loop" else NNModel(cell, H)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x = torch.randn(T, B, H)
    y = torch.randint(0, V, (T * B,))

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(T * B, V), y, reduction="sum")
        loss.backward()
        opt.step()
        return loss

    mark = _rss_mark()
    t0 = CLOCK()
    for _ in range(warmup):
        loss = step()
    warm = (CLOCK() - t0) / max(warmup, 1)
    if repeats is None:
        repeats = int(min(200, max(20, 2.0 / max(warm, 1e-6))))
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        loss = step()
        times.append(CLOCK() - t0)
    if not torch.isfinite(loss):
        print(f"warning: {impl} {cell} {config}: loss is not finite", file=sys.stderr)
    med = statistics.median(times)
    return {"impl": "torch_" + impl, "cell": cell, "config": config, "threads": threads,
            "median_ms": med * 1e3, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
            "tokens_per_s": T * B / med, "T": T, "B": B, "H": H, "V": V, "repeats": repeats,
            "os_threads": _os_threads(), "rss_rise_kib": _rss_rise(mark),
            "openblas_core": OPENBLAS_CORE}


OPENBLAS_CORE = None   # set by openblas_info()


def _status_kib(field):
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _rss_mark():
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); returns the current RSS, KiB."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def _rss_rise(mark):
    hwm = _status_kib("VmHWM")
    return -1 if hwm < 0 or mark < 0 else hwm - mark


def _os_threads():
    """Threads this process has (torch's pool + OpenBLAS's + main): a sanity check of --threads."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _list_arg(value, allowed, what):
    items = [v for v in value.split(",") if v] if value else []
    if value == "all" or not items:
        return list(allowed)
    for v in items:
        if allowed is not None and v not in allowed:
            raise SystemExit(f"--{what}: unknown {what} '{v}' (choose from {', '.join(allowed)})")
    return items


def find_openblas():
    """The OpenBLAS that torch loaded (Debian's torch calls BLAS through libblas.so.3, which the
    alternatives system points at openblas-pthread or openblas-openmp), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                path = line.split()[-1]
                if "libopenblas" in path and os.path.isfile(path):
                    return path
    except OSError:
        pass
    return None


def openblas_info(match_threads):
    """Describes the loaded OpenBLAS; with match_threads, sets its thread count to torch's.
    Why: torch.set_num_threads only sizes torch's OpenMP pool. A Debian torch (BLAS_INFO=generic)
    never calls openblas_set_num_threads, and the pthread flavour of OpenBLAS keeps its own pool
    of one thread per CPU, so "1 thread" would otherwise run its GEMMs on every core."""
    path = find_openblas()
    if path is None:
        return "BLAS: no libopenblas mapped (thread count left alone)"
    lib = ctypes.CDLL(path)
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    global OPENBLAS_CORE
    OPENBLAS_CORE = lib.openblas_get_corename().decode()
    before = lib.openblas_get_num_threads()
    if match_threads:
        lib.openblas_set_num_threads(ctypes.c_int(torch.get_num_threads()))
    after = lib.openblas_get_num_threads()
    flavour = {0: "sequential", 1: "pthread", 2: "openmp"}.get(lib.openblas_get_parallel(), "?")
    return (f"BLAS: {path} ({flavour}; {lib.openblas_get_config().decode()}; core "
            f"{lib.openblas_get_corename().decode()}); openblas threads {before} -> {after}")


def print_environment(threads, match_blas):
    env = {k: v for k, v in sorted(os.environ.items())
           if k.startswith("OPENBLAS_") or k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                 "GOTO_NUM_THREADS", "OMP_PROC_BIND",
                                                 "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    print(f"# torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"torch.set_num_threads({threads}) -> get_num_threads() = {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}")
    print("# environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or
                               "no OPENBLAS_* / *_NUM_THREADS variables set"))
    print("# " + openblas_info(match_blas))


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch training-step benchmark (tapegrad issue 6)")
    ap.add_argument("--cell", default="all",
                    help="comma-separated from lstm,gru,rnn_tanh (default all)")
    ap.add_argument("--config", default="all",
                    help="comma-separated T<steps>B<batch>H<hidden> names (default: "
                         + ",".join(CONFIGS) + ")")
    ap.add_argument("--impl", default="all", help="comma-separated from nn,loop (default all; "
                                                  "loop runs for lstm only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed steps (default: ~2 s worth, 20..200)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--blas-threads", choices=("match", "leave"), default="match",
                    help="match: set OpenBLAS's thread count to --threads (default); "
                         "leave: keep OpenBLAS's own (pthread flavour: one per CPU)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall (default) or cpu: the process's CPU time (all threads), which a "
                         "loaded machine's time slicing does not inflate")
    ap.add_argument("--json", metavar="FILE", help="write the results as a JSON list")
    args = ap.parse_args(argv)

    if args.threads < 1 or (args.repeats is not None and args.repeats < 1) or args.warmup < 0:
        raise SystemExit("--threads and --repeats must be >= 1, --warmup >= 0")
    cells = _list_arg(args.cell, CELLS, "cell")
    impls = _list_arg(args.impl, IMPLS, "impl")
    configs = _list_arg(args.config, None, "config") if args.config != "all" else list(CONFIGS)
    for c in configs:
        try:
            parse_config(c)
        except ValueError as e:
            raise SystemExit(str(e))

    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    print_environment(args.threads, args.blas_threads == "match")
    print(f"# one training step, float32: forward + summed cross-entropy (V={V}) + backward + SGD")
    print(f"{'impl':<12} {'cell':<9} {'config':<13} {'thr':>3} {'median ms':>10} "
          f"{'min–max ms':>19} {'tokens/s':>11} {'steps':>5}")
    results = []
    for cell in cells:
        for impl in impls:
            if impl == "loop" and cell != "lstm":
                continue
            for config in configs:
                r = bench_one(impl, cell, config, args.threads, args.repeats, args.warmup)
                results.append(r)
                print(f"{r['impl']:<12} {cell:<9} {config:<13} {args.threads:>3} "
                      f"{r['median_ms']:10.3f} {r['min_ms']:9.3f}–{r['max_ms']:<9.3f} "
                      f"{r['tokens_per_s']:11.0f} {r['repeats']:5d}", flush=True)
    if not results:
        print("nothing to run: --impl loop exists for lstm only", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
