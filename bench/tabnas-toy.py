#!/usr/bin/env python3
"""Independent reference for nas-search's controller on the TabNAS toy problem.

A pure-Python (no numpy) re-implementation of the loop of the official TF2
notebook (google-research/tabnas, toy_example/NAS_toy_example_TF2+Keras.ipynb):
logits at 0, sample, reject over 25 parameters, bias-corrected EMA baseline
(0.9), N = 5 Monte-Carlo samples for P(V), loss -A log(p(y)/P_hat), its
gradient in closed form, Adam (0.9, 0.999, 1e-8). Its random stream is
Python's, not the Rust controller's: the two agree in distribution only.

Usage: bench/tabnas-toy.py [REPS]   (default 200). Prints one line per
configuration: how often each child is the final pick.
"""
import math
import random
import sys
from collections import Counter

WIDTHS = [2, 3, 4]
LOSS = {(2, 2): .9, (2, 3): .9, (3, 2): .9, (2, 4): .66, (4, 2): .6, (3, 3): .66,
        (3, 4): .3, (4, 3): .3, (4, 4): .1}


def n_params(a, b):
    return 3 * a + a * b + 2 * b + 1


def feasible(i, j):
    return n_params(WIDTHS[i], WIDTHS[j]) <= 25


def softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


def draw(p, rng):
    u = rng.random()
    c = 0.0
    for k, x in enumerate(p):
        c += x
        if u < c:
            return k
    return len(p) - 1


def run(rep, mode, lr, beta=2.0, n_mc=5, iters=500):
    logits = [[0.0] * 3, [0.0] * 3]
    m, v, t = [0.0] * 6, [0.0] * 6, 0
    num = den = 0.0
    for it in range(iters):
        rng = random.Random(1000 * rep + it)
        probs = [softmax(logits[0]), softmax(logits[1])]
        i, j = draw(probs[0], rng), draw(probs[1], rng)
        a, b = WIDTHS[i], WIDTHS[j]
        if mode == 'rejection':
            if not feasible(i, j):
                continue
            reward = 1 - LOSS[(a, b)]
        else:
            reward = 1 - LOSS[(a, b)] - beta * abs(n_params(a, b) / 25 - 1)
        num = .9 * num + .1 * reward
        den = .9 * den + .1
        adv = reward - num / den
        # d log(p(y)/P_hat) / d logit_dk = 1[y_d = k] - w_dk.
        if mode == 'rejection':
            s = [z for z in ((draw(probs[0], rng), draw(probs[1], rng)) for _ in range(n_mc))
                 if feasible(*z)]
            if not s:
                continue
            w = [[0.0] * 3, [0.0] * 3]
            total = 0.0
            for za, zb in s:
                pz = probs[0][za] * probs[1][zb]
                total += pz
                w[0][za] += pz
                w[1][zb] += pz
            w = [[x / total for x in row] for row in w]
        else:
            w = probs
        grad = [-adv * ((1.0 if k == y else 0.0) - w[d][k]) for d, y in ((0, i), (1, j))
                for k in range(3)]
        t += 1
        for k in range(6):
            m[k] = .9 * m[k] + .1 * grad[k]
            v[k] = .999 * v[k] + .001 * grad[k] ** 2
            mh, vh = m[k] / (1 - .9 ** t), v[k] / (1 - .999 ** t)
            logits[k // 3][k % 3] -= lr * mh / (math.sqrt(vh) + 1e-8)
    return [softmax(logits[0]), softmax(logits[1])]


def pick(probs, mode):
    cands = [(probs[0][a] * probs[1][b], (a, b)) for a in range(3) for b in range(3)
             if mode != 'rejection' or feasible(a, b)]
    a, b = max(cands)[1]
    return f"{WIDTHS[a]}-{WIDTHS[b]}"


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for name, mode, lr, beta in [('rejection lr 0.1', 'rejection', 0.1, 0),
                                 ('rejection lr 0.02', 'rejection', 0.02, 0),
                                 ('abs beta 2', 'abs', 0.05, 2.0)]:
        counts = Counter(pick(run(r, mode, lr, beta), mode) for r in range(reps))
        print(f"python {name}: " + " ".join(f"{k}:{n}" for k, n in sorted(counts.items()))
              + f" (of {reps})")


if __name__ == '__main__':
    main()
