#!/usr/bin/env python3
"""mpi_model.py — when do N machines pay off for data-parallel training (issue 16)?

    step(N) = t_c / N  +  (N − 1) · S / bw
      t_c  compute of one optimizer step of the whole batch on one machine (measured)
      S    one micro-batch slot: 4 bytes per float32 weight (+128); with K = N micro-batches each
           rank receives the other N − 1 slots per step (MPI_Allgatherv, ring or Bruck: the
           receiving side's bytes set the time on a full-duplex link)
      bw   link bandwidth, bytes/s
    speed-up(N) = t_c / step(N); it beats one machine while S / bw < t_c / N, and is largest
    at N* = sqrt(t_c · bw / S). Latency (µs per message) and the sum of N slots (memory-bound,
    ≈ N·S / 10 GB/s) are left out; the second is listed.

LSTM, I = H, V = 64 (tapegrad bench's model): weights P = 8H² + 72H + 64.
    bench/mpi_model.py T100B64H512=1600 T100B64H2048=26000     (t_c in ms)
"""
import math
import re
import sys


def weights(H, V=64):
    return 8 * H * H + 8 * H + V * H + V


def main(args):
    print(f"{'config':14} {'t_c ms':>8} {'S MiB':>7} {'link':>9} {'S/bw ms':>8} "
          + " ".join(f"{'N=' + str(n):>6}" for n in (2, 4, 8, 16)) + f" {'N*':>5} {'best':>6}")
    for a in args:
        cfg, tc = a.split("=")
        tc = float(tc)
        H = int(re.search(r"H(\d+)", cfg).group(1))
        S = 4 * weights(H) + 128
        for gbit in (10, 100):
            c = S / (gbit * 1e9 / 8) * 1e3
            sp = [tc / (tc / n + (n - 1) * c) for n in (2, 4, 8, 16)]
            nstar = math.sqrt(tc / c)
            n0 = max(1, round(nstar))
            best = tc / (tc / n0 + (n0 - 1) * c)
            print(f"{cfg:14} {tc:8.0f} {S / 2**20:7.1f} {str(gbit) + ' Gb/s':>9} {c:8.2f} "
                  + " ".join(f"{x:6.2f}" for x in sp) + f" {nstar:5.0f} {best:6.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["T100B64H512=1600", "T100B64H2048=26000"])
