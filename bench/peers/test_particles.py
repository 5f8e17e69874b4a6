"""The Python particle-list parser against the cases of src/cli/particles.rs (same grammar).
Run: python3 -m unittest discover -s bench/peers -p 'test_*.py'"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from particles import parse_particles  # noqa: E402


class Tests(unittest.TestCase):
    def test_ranges_and_lists(self):
        self.assertEqual(parse_particles("2^10..2^14"), [1024, 2048, 4096, 8192, 16384])
        self.assertEqual(parse_particles("1..8"), [1, 2, 4, 8])
        self.assertEqual(len(parse_particles("2^10..2^30")), 21)
        self.assertEqual(parse_particles(" 4096, 1000 ,2^10, 1_024 "), [1000, 1024, 4096])
        self.assertEqual(parse_particles("2^2..2^4,3,8"), [3, 4, 8, 16])
        self.assertEqual(parse_particles("2^40"), [1 << 40])

    def test_bad_lists(self):
        cases = [("", "empty particle list"), ("1024,,2048", "extra comma"), ("1024,", "extra comma"),
                 ("0", "at least 1"), ("2^10..3000", "not a power of two"), ("2^14..2^10", "backwards"),
                 ("abc", "expected a number"), ("-5", "expected a number"), ("1e6", "expected a number"),
                 ("2^", "exponent"), ("2^x", "exponent"), ("2^41", "limit 2^40"), ("2000000000000", "limit 2^40")]
        for text, want in cases:
            with self.assertRaises(ValueError, msg=text) as cm:
                parse_particles(text)
            self.assertIn(want, str(cm.exception), text)


if __name__ == "__main__":
    unittest.main()
