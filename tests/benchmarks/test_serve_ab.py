"""benchmarks/serve_ab.py: the revision it compares with is the package as git has it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from repo import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import serve_ab  # noqa: E402  (from benchmarks/, put on the path above)

pytestmark = pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the project's git checkout")


def test_a_revision_is_served_from_the_source_git_holds(tmp_path):
    src = serve_ab.package_at("HEAD", tmp_path)
    held = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:src/fixmatch/inference/preprocess.py"],
        capture_output=True,
        check=True,
    ).stdout
    assert src == tmp_path / "src" and (src / "fixmatch" / "inference" / "preprocess.py").read_bytes() == held


def test_an_unknown_revision_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="git archive no-such-revision"):
        serve_ab.package_at("no-such-revision", tmp_path)
