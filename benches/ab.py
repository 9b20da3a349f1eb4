#!/usr/bin/env python3
"""Interleaved A/B of two or more binaries on the same arguments.

Usage: benches/ab.py ROUNDS BIN1 BIN2 [BIN...] -- ARGS...

Runs each binary once per round (order reversed every other round, output
to /dev/null, in the current directory) and prints, per binary, the median
and trimmed mean (middle 60 %) of the wall time and of the CPU time (user +
system from wait4, children included). On this noisy 2-core VM, hyperfine's
blocks of runs drift apart; alternating single runs compares like with like.
A non-zero exit is printed, not hidden.
"""
import os, sys, time, statistics as st, subprocess
i = sys.argv.index('--'); n = int(sys.argv[1]); bins = sys.argv[2:i]; args = sys.argv[i+1:]
res = {b: [] for b in bins}
devnull = os.open(os.devnull, os.O_WRONLY)
for r in range(n):
    for b in (bins if r % 2 == 0 else bins[::-1]):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.dup2(devnull, 1); os.dup2(devnull, 2)
            os.execv(b, [b] + args)
        _, status, ru = os.wait4(pid, 0)
        w = time.perf_counter() - t
        if status != 0: print('exit', status, b)
        res[b].append((w * 1000, (ru.ru_utime + ru.ru_stime) * 1000))
for b in bins:
    w = sorted(x for x, _ in res[b]); c = sorted(y for _, y in res[b])
    tm = lambda v: st.mean(v[len(v)//5: len(v) - len(v)//5])
    print('%-50s wall median %6.1f trim %6.1f | cpu median %6.1f trim %6.1f' % (b[-50:], st.median(w), tm(w), st.median(c), tm(c)))
