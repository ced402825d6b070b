#!/usr/bin/python3
"""minchar_numpy.py — the NumPy reference for the min-char-rnn benchmark config (issue 15).

    /usr/bin/python3 bench/minchar_numpy.py --data FILE [--steps N] [--warmup W] [--hidden 100]
                                            [--seq 25] [--json FILE]

The training loop of the seed notes' min-char-rnn (Karpathy's, as transcribed in
/work/shared/seeds: a vanilla tanh RNN over characters, column vectors, one sequence), written
here from its equations:

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)      x_t one-hot over the V byte values of the file
    p_t = softmax(W_hy h_t + b_y)                  loss = -sum_t log p_t[target_t]
    backward through the T = 25 steps, clip every gradient element to [-5, 5],
    Adagrad: m += g*g;  W -= 0.1 * g / sqrt(m + 1e-8)

with H = 100, weights N(0, 0.01^2), biases 0, and the hidden state carried from window to
window (zeroed when the walk over the file starts over), windows of 25 bytes taken in order.
One step = one window: forward, backward, clip, update — what `minchar_bench` times on
tapegrad's side. Each step is timed with time.perf_counter (--clock cpu: time.process_time); after --warmup steps, the median
and min–max over --steps steps are printed (ms/step), and the loss of the first step as a
check that both sides compute the same thing (-log(1/V)·25 at the start).
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description="min-char-rnn in NumPy: ms per training step")
    ap.add_argument("--data", required=True, help="text file (read as bytes)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--seq", type=int, default=25)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall (default) or cpu: the process's CPU time")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.hidden < 1 or a.seq < 1:
        raise SystemExit("minchar_numpy.py: --steps, --hidden, --seq must be >= 1, --warmup >= 0")
    try:
        data = open(a.data, "rb").read()
    except OSError as e:
        raise SystemExit(f"minchar_numpy.py: --data: {e}")
    if len(data) < a.seq + 1:
        raise SystemExit(f"minchar_numpy.py: {a.data}: {len(data)} bytes, need at least {a.seq + 1}")
    chars = sorted(set(data))
    V, H, T = len(chars), a.hidden, a.seq
    ix = {c: i for i, c in enumerate(chars)}
    seq = [ix[c] for c in data]

    rng = np.random.default_rng(a.seed)
    Wxh = rng.standard_normal((H, V)) * 0.01
    Whh = rng.standard_normal((H, H)) * 0.01
    Why = rng.standard_normal((V, H)) * 0.01
    bh = np.zeros((H, 1))
    by = np.zeros((V, 1))
    params = [Wxh, Whh, Why, bh, by]
    mem = [np.zeros_like(p) for p in params]

    def loss_fun(inputs, targets, hprev):
        xs, hs, ps = {}, {-1: np.copy(hprev)}, {}
        loss = 0.0
        for t in range(len(inputs)):
            xs[t] = np.zeros((V, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys = np.dot(Why, hs[t]) + by
            e = np.exp(ys - np.max(ys))
            ps[t] = e / np.sum(e)
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1                       # softmax + cross-entropy
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh          # through tanh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for d in (dWxh, dWhh, dWhy, dbh, dby):
            np.clip(d, -5, 5, out=d)
        return loss, [dWxh, dWhh, dWhy, dbh, dby], hs[len(inputs) - 1]

    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    p, hprev = 0, np.zeros((H, 1))
    times, first_loss = [], None
    for step in range(a.warmup + a.steps):
        t0 = clock()
        if p + T + 1 > len(seq):
            p, hprev = 0, np.zeros((H, 1))
        inputs, targets = seq[p:p + T], seq[p + 1:p + T + 1]
        loss, grads, hprev = loss_fun(inputs, targets, hprev)
        for prm, g, m in zip(params, grads, mem):
            m += g * g
            prm += -a.lr * g / np.sqrt(m + 1e-8)
        p += T
        dt = clock() - t0
        if first_loss is None:
            first_loss = loss
        if step >= a.warmup:
            times.append(dt * 1e3)
    med = statistics.median(times)
    print(f"# numpy {np.__version__}, python {sys.version.split()[0]}; V = {V} byte values, H = {H}, "
          f"T = {T}, B = 1, Adagrad lr {a.lr}, clip 5; clock {a.clock}")
    print(f"minchar numpy: {med:.4f} ms/step median ({min(times):.4f}–{max(times):.4f}) over "
          f"{len(times)} steps after {a.warmup}; first loss {first_loss:.6f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"impl": "numpy", "median_ms": med, "min_ms": min(times), "max_ms": max(times),
                       "steps": len(times), "V": V, "H": H, "T": T, "first_loss": first_loss, "clock": a.clock}, f)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
