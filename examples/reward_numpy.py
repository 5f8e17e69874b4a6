#!/usr/bin/env python3
"""A flowsteer reward program (--reward-cmd "python3 examples/reward_numpy.py"), numpy only.

Protocol (docs/writing-a-reward.md): flowsteer starts this program once and, per batch, writes
"<t> <nbytes>\n" and then a float32 .npy of shape [B, D] to its stdin; the program answers
"<nbytes>\n" and then a float32 .npy of shape [B] on stdout, and flushes. stdin closes at the end.
Print logs to stderr only: stdout carries the answers.

This reward: -|x - (2, 0.5)|, larger is better (the same as --reward "-norm(x - [2, 0.5])").
"""
import io
import sys

import numpy as np

TARGET = np.array([2.0, 0.5], dtype=np.float32)


def reward(x: np.ndarray, t: float) -> np.ndarray:
    return -np.linalg.norm(x - TARGET, axis=1)


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.readline()
        if not header:
            return  # flowsteer closed the pipe: the run is over
        t, nbytes = header.split()
        x = np.load(io.BytesIO(stdin.read(int(nbytes))))
        r = np.asarray(reward(x, float(t)), dtype=np.float32).reshape(len(x))
        buf = io.BytesIO()
        np.save(buf, r)
        stdout.write(b"%d\n" % buf.getbuffer().nbytes)
        stdout.write(buf.getvalue())
        stdout.flush()


if __name__ == "__main__":
    main()
