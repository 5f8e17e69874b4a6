"""Tests of results_to_readme.py: python3 -m unittest discover -s scripts -p 'test_*.py'"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_to_results as b  # noqa: E402
import results_to_readme as r  # noqa: E402


def table(**over):
    t = {"schema": r.SCHEMA, "kind": "peer_comparison", "title": "flowsteer vs peer (cpu)", "device": "EPYC, 2 threads",
         "date": "2026-11-23T09:00:00Z", "command": "python3 bench/peers/run_peer_comparison.py --device cpu",
         "versions": {"flowsteer": "0.1.0", "torch": "2.11.0"}, "columns": ["particles", "ratio"],
         "rows": [[1024, "3.10×"], [16384, "4.00×"]], "notes": ["a note"]}
    t.update(over)
    return t


README = "# flowsteer\n\nintro\n\n## Measured\n<!-- measured:begin -->\nold stuff\n<!-- measured:end -->\n\n## After\ntail\n"


class Tests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.dir.name, "results")
        os.makedirs(self.results)
        self.readme = os.path.join(self.dir.name, "README.md")
        with open(self.readme, "w") as f:
            f.write(README)

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, obj):
        with open(os.path.join(self.results, name), "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))

    def read(self):
        with open(self.readme) as f:
            return f.read()

    def test_block_is_replaced_and_the_rest_kept(self):
        self.write("b.json", table(device="H100", title="gpu"))
        self.write("a.json", table())
        self.assertEqual(r.main(["--results", self.results, "--readme", self.readme]), 0)
        text = self.read()
        self.assertTrue(text.startswith("# flowsteer\n\nintro\n\n## Measured\n<!-- measured:begin -->\n"))
        self.assertTrue(text.endswith("<!-- measured:end -->\n\n## After\ntail\n"))
        self.assertNotIn("old stuff", text)
        self.assertIn("| 16384 | 4.00× |", text)
        self.assertIn("Command: `python3 bench/peers/run_peer_comparison.py --device cpu`", text)
        self.assertIn("versions: flowsteer 0.1.0, torch 2.11.0", text)
        # Ordered by kind then device: "EPYC" before "H100".
        self.assertLess(text.index("EPYC"), text.index("H100"))
        # Idempotent, and --check agrees.
        self.assertEqual(r.main(["--results", self.results, "--readme", self.readme, "--check"]), 0)
        before = self.read()
        r.main(["--results", self.results, "--readme", self.readme])
        self.assertEqual(before, self.read())

    def test_check_reports_an_out_of_date_readme_and_changes_nothing(self):
        self.write("a.json", table())
        self.assertEqual(r.main(["--results", self.results, "--readme", self.readme, "--check"]), 1)
        self.assertEqual(self.read(), README)

    def test_other_json_is_skipped_and_bad_json_is_an_error(self):
        self.write("other.json", {"something": 1})
        self.assertEqual(r.main(["--results", self.results, "--readme", self.readme]), 0)
        self.assertIn("No measurements committed yet", self.read())
        self.write("broken.json", "{not json")
        self.assertEqual(r.main(["--results", self.results, "--readme", self.readme]), 2)

    def test_missing_fields_markers_and_ragged_rows_are_errors(self):
        bad = table()
        del bad["device"]
        self.write("a.json", bad)
        with self.assertRaisesRegex(r.ResultsError, "lacks device"):
            r.load_tables(self.results)
        with self.assertRaisesRegex(r.ResultsError, "no <!-- measured:begin -->"):
            r.replace_block("# no markers\n", "x")
        with self.assertRaisesRegex(r.ResultsError, "before"):
            r.replace_block(f"{r.END}\n{r.BEGIN}\n", "x")
        with self.assertRaisesRegex(r.ResultsError, "3 cells for 2 columns"):
            r.render_table(table(rows=[[1, 2, 3]]))

    def test_pipes_in_cells_do_not_break_the_table(self):
        md = r.render_table(table(rows=[["a|b", 1]]))
        self.assertIn("| a\\|b | 1 |", md)


class BenchTable(unittest.TestCase):
    REPORT = {"backend": "cpu", "device": "x86_64, 2 threads", "kernels": "avx2+fma", "threads": 2, "model": "m",
              "sampler": "sde", "fp32_limit_gflops": 100.0, "fp32_limit_source": "sgemm",
              "rows": [{"particles": 16384, "phase": "propagate", "median_s": 0.01, "min_s": 0.009, "max_s": 0.012,
                        "rate": 1.6e7, "rate_unit": "particle-steps/s", "gflops": 50.0, "gbytes_per_s": None,
                        "fp32_limit_gflops": 100.0, "fraction_of_fp32_limit": 0.5, "note": None},
                       {"particles": 16384, "phase": "resample", "median_s": None, "min_s": None, "max_s": None,
                        "rate": None, "rate_unit": "particles/s", "gflops": None, "gbytes_per_s": None,
                        "fp32_limit_gflops": None, "fraction_of_fp32_limit": None, "note": "not implemented"}]}

    def test_a_bench_report_becomes_a_table_the_readme_renders(self):
        t = b.table_from_report(self.REPORT, "flowsteer bench --json", "2026-11-23T10:00:00Z", {"flowsteer": "0.1.0"})
        md = r.render_table(t)
        self.assertIn("| 16384 | propagate | 10.000 | 9.000–12.000 | 1.6e+07 particle-steps/s | 50 | — | 50.0 % |", md)
        self.assertIn("n/a (not implemented)", md)
        self.assertIn("Device: x86_64, 2 threads", md)


if __name__ == "__main__":
    unittest.main()
