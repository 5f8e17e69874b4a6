#!/usr/bin/env python3
"""A flowsteer reward program with no dependencies at all (the Python standard library reads
and writes the .npy arrays by hand); the same protocol and reward as reward_numpy.py.
flowsteer's tests run it, and its MODE argument makes it misbehave on purpose:
  ok (default) | die (exit on the 2nd batch) | hang (never answer the 2nd batch) |
  shape (answer [B+1]) | garbage (answer text)
"""
import ast
import math
import struct
import sys


def read_npy(data: bytes):
    assert data[:6] == b"\x93NUMPY", "not a .npy"
    hlen = struct.unpack("<H", data[8:10])[0]
    header = ast.literal_eval(data[10:10 + hlen].decode("latin1"))
    assert header["descr"] == "<f4" and not header["fortran_order"], header
    shape = header["shape"]
    count = math.prod(shape)
    values = struct.unpack("<%df" % count, data[10 + hlen:10 + hlen + 4 * count])
    return shape, values


def write_npy(values) -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + struct.pack("<%df" % len(values), *values)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    batch = 0
    while True:
        header = stdin.readline()
        if not header:
            return
        t, nbytes = header.split()
        (b, d), x = read_npy(stdin.read(int(nbytes)))
        batch += 1
        if batch == 2 and mode == "die":
            print("reward program: giving up on batch 2", file=sys.stderr, flush=True)
            sys.exit(3)
        if batch == 2 and mode == "hang":
            print("reward program: thinking forever", file=sys.stderr, flush=True)
            while True:
                pass
        r = [-math.sqrt((x[i * d] - 2.0) ** 2 + (x[i * d + 1] - 0.5) ** 2) for i in range(b)]
        if mode == "shape":
            r.append(0.0)
        out = b"not a npy" if mode == "garbage" else write_npy(r)
        stdout.write(b"%d\n" % len(out))
        stdout.write(out)
        stdout.flush()


if __name__ == "__main__":
    main()
