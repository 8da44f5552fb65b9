"""What users read speaks of their machine and their data, never of the project's development set-up;
the commands printed for them point at things that exist; data is looked for where users keep it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixmatch.cli import next_steps
from fixmatch.data import load_dataset
from fixmatch.errors import DataError

REPO = Path(__file__).resolve().parents[1]
# The development data folder, the machine the project was developed on, and issue numbers.
DEVELOPMENT_WORDS = re.compile(r"\.\./shared|shared/data|offline cop(y|ies)|\bissue\s*#?\d+|2-core machine", re.I)


def user_facing_files() -> list[Path]:
    """README, docs/ and the package's sources (its strings become --help, errors and hints)."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "src").rglob("*.py"))]
    assert len(files) > 50  # the globs found the package
    return files


def test_no_user_facing_text_speaks_of_the_development_set_up():
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in user_facing_files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if DEVELOPMENT_WORDS.search(line)
    ]
    assert not found, "\n".join(found)


def hints(text: str) -> list[str]:
    return [line.split("  #", 1)[1].strip() for line in text.splitlines() if "  # " in line]


def test_the_own_images_hint_points_at_a_page_that_exists_and_is_not_shown_after_a_folders_run():
    runs = [Path("runs/x/supervised"), Path("runs/x/fixmatch")]
    after_digits = next_steps(runs, "digits")
    assert "--dataset folders" in after_digits
    pages = [p for hint in hints(after_digits) for p in re.findall(r"[\w./-]+\.md", hint)]
    assert pages and all((REPO / page).is_file() for page in pages), pages
    assert "README:" not in after_digits  # the README has no section of that name
    after_folders = next_steps(runs, "folders")
    assert "--dataset folders" not in after_folders
    assert "evaluate --checkpoint runs/x/fixmatch" in after_folders and "train --help" in after_folders


def test_data_is_looked_for_where_users_keep_it_not_beside_the_checkout(tmp_path, monkeypatch):
    """--data-dir names the folder; a missing dataset's error points at $FIXMATCH_DATA or ./data when
    they hold it, never at a shared/data folder beside the working folder."""
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "cifar10_device.npz.xz").write_bytes(b"")  # only its presence is looked at
    work, empty = tmp_path / "work", tmp_path / "empty"
    work.mkdir()
    empty.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("FIXMATCH_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", empty)
    assert "Found" not in str(e.value) and "shared" not in str(e.value)
    monkeypatch.setenv("FIXMATCH_DATA", str(tmp_path / "shared" / "data"))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", empty)
    assert f"pass --data-dir {tmp_path / 'shared' / 'data'}" in str(e.value)
