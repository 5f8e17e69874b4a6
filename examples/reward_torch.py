#!/usr/bin/env python3
"""A PyTorch-style verifier behind --reward-cmd (docs/writing-a-reward.md): the batch becomes a
tensor, any torch module scores it (here a fixed one; load your own with torch.load), the scores
go back as a [B] float32 .npy. Needs numpy and torch.
"""
import io
import sys

import numpy as np
import torch

# Replace with your verifier, e.g. torch.jit.load("verifier.pt").eval().
target = torch.tensor([2.0, 0.5])
verifier = lambda x, t: -torch.linalg.vector_norm(x - target, dim=1)  # noqa: E731

def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    with torch.no_grad():
        while header := stdin.readline():
            t, nbytes = header.split()
            x = torch.from_numpy(np.load(io.BytesIO(stdin.read(int(nbytes)))))
            r = verifier(x, float(t)).to(torch.float32).cpu().numpy().reshape(len(x))
            buf = io.BytesIO()
            np.save(buf, r)
            stdout.write(b"%d\n" % buf.getbuffer().nbytes)
            stdout.write(buf.getvalue())
            stdout.flush()


if __name__ == "__main__":
    main()
