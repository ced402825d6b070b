#!/usr/bin/python3
"""The PyTorch side of bench/recompute_bench.sh: one LSTM training step on a long sequence,
plain or with torch.utils.checkpoint over K-step segments, with the shapes of
bench/recompute_bench.c (float32, one layer, dense input I = 16, V = 16 classes, cross-entropy
summed over every step; zero_grad + forward + backward, no optimizer update). One mode per
process, so ru_maxrss is that mode's peak; the baseline after building model and data is
printed as well. One untimed warm-up step comes first, as on the C side.

With checkpointing, each segment's LSTM, output layer and loss run inside one checkpointed
function from the segment's initial (h, c): only the segment boundaries and the per-segment
losses are kept, as in tapegrad's recompute (models/recompute.c). torch.utils.checkpoint's
default (reentrant) form is used: it runs the first forward under no_grad and keeps nothing
else. (Its reentrant form only differentiates through a segment with an input that requires a
gradient, so the initial h does; that costs nothing.) The non-reentrant form
(use_reentrant=False, pass --non-reentrant) held 2.6 GB at T = 10 000 here against 0.4 GB.

    /usr/bin/python3 bench/torch_recompute.py T B H K steps [--non-reentrant]    (K = 0: plain)
"""
import resource
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

I, V = 16, 16


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    args = [a for a in sys.argv[1:] if a != "--non-reentrant"]
    reentrant = len(args) == len(sys.argv) - 1
    if len(args) != 5:
        sys.exit("usage: torch_recompute.py T B H K steps [--non-reentrant]   (K = 0: plain)")
    T, B, H, K, steps = (int(a) for a in args)
    if min(T, B, H, steps) < 1 or not 0 <= K <= T:
        sys.exit("torch_recompute.py: need T, B, H, steps >= 1 and 0 <= K <= T")
    torch.set_num_threads(1)
    torch.manual_seed(7)
    lstm = torch.nn.LSTM(I, H)
    out = torch.nn.Linear(H, V)
    params = list(lstm.parameters()) + list(out.parameters())
    x = torch.rand(T, B, I) * 2 - 1
    y = torch.randint(0, V, (T, B))

    def segment(xs, ys, h, c):
        o, (h2, c2) = lstm(xs, (h, c))
        loss = F.cross_entropy(out(o).reshape(-1, V), ys.reshape(-1), reduction="sum")
        return loss, h2, c2

    base = rss_mb()
    times, cpu = [], []
    loss = None
    for step in range(-1, steps):  # step -1: warm-up, not timed
        t0, c0 = time.perf_counter(), time.process_time()
        for p in params:
            p.grad = None
        h = torch.zeros(1, B, H, requires_grad=K > 0 and reentrant)
        c = torch.zeros(1, B, H)
        if K == 0:
            loss, _, _ = segment(x, y, h, c)
        else:
            loss = 0
            for s in range(0, T, K):
                ls, h, c = checkpoint(segment, x[s:s + K], y[s:s + K], h, c, use_reentrant=reentrant)
                loss = loss + ls
        loss.backward()
        if step >= 0:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    times.sort()
    cpu.sort()
    print("mode=%s T=%d B=%d H=%d K=%d steps=%d median_ms=%.1f min_ms=%.1f cpu_ms=%.1f "
          "base_rss_mb=%.1f peak_rss_mb=%.1f loss=%.6g torch=%s"
          % (("checkpoint" if reentrant else "checkpoint-nonreentrant") if K else "plain", T, B, H, K, steps, times[len(times) // 2], times[0],
             cpu[len(cpu) // 2], base, rss_mb(), float(loss), torch.__version__))


if __name__ == "__main__":
    main()
