"""Particle-count lists, the same grammar as `flowsteer bench/sweep --particles` (src/cli/particles.rs).

    LIST  := ITEM ("," ITEM)*
    ITEM  := COUNT | COUNT ".." COUNT          a range: every power of two from the first to the last
    COUNT := DIGITS | "2^" DIGITS              underscores allowed in DIGITS (1_048_576)

The result is sorted and free of duplicates. Both ends of a range must be powers of two.
"""

MAX_COUNT = 1 << 40


def _count(text: str, whole: str) -> int:
    s = text.strip().replace("_", "")
    if s.startswith("2^"):
        e = s[2:]
        if not e.isdigit():
            raise ValueError(f"bad particle count {text.strip()!r} in {whole!r}: after '2^' give an exponent, e.g. 2^14")
        if int(e) > 40:
            raise ValueError(f"particle count {text.strip()} is above the limit 2^40")
        return 1 << int(e)
    if not s.isdigit():
        raise ValueError(f"bad particle count {text.strip()!r} in {whole!r}: expected a number such as 16384 or 2^14")
    v = int(s)
    if v == 0:
        raise ValueError(f"particle count 0 in {whole!r}: every count must be at least 1")
    if v > MAX_COUNT:
        raise ValueError(f"particle count {v} is above the limit 2^40")
    return v


def parse_particles(text: str) -> list[int]:
    if not text.strip():
        raise ValueError("empty particle list: give counts such as 1024,4096 or a range 2^10..2^14")
    out: set[int] = set()
    for item in text.split(","):
        if not item.strip():
            raise ValueError(f"empty item in particle list {text!r}: remove the extra comma")
        if ".." in item:
            lo_s, hi_s = item.split("..", 1)
            lo, hi = _count(lo_s, text), _count(hi_s, text)
            for v, s in ((lo, lo_s), (hi, hi_s)):
                if v & (v - 1):
                    raise ValueError(f"range {item.strip()!r}: {s.strip()} is not a power of two; ranges double, "
                                     "so write both ends as powers of two (2^10..2^14) or give a comma list")
            if lo > hi:
                raise ValueError(f"range {item.strip()!r} runs backwards: put the smaller count first")
            v = lo
            while v <= hi:
                out.add(v)
                v *= 2
        else:
            out.add(_count(item, text))
    return sorted(out)
