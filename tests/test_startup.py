"""The light entry points stay light: `fixmatch --help` (and each subcommand's --help) never imports
torch; serving an ONNX model never does either (tests/serve/test_serve.py checks the worker)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["serve", "--help"], ["bench", "--help"], ["predict", "--help"]]
)
def test_help_never_imports_torch(argv):
    code = (
        "import sys\nfrom fixmatch.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)" % argv
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().splitlines()[-1] == "False", out.stderr[-2000:]
    assert "usage: fixmatch" in out.stdout
