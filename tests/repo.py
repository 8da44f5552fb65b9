"""Where the repository's own files are, for the tests that read them (README, docs, configs,
benchmarks, the package's source) from whichever folder of tests/ they are in."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"  # the helper modules (tiny_runs, serve_fixtures, ...): a child process needs it on its path
