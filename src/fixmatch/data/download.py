"""Where dataset files live, and fetching the official archives with a checksum check."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fixmatch.errors import DataError

DATA_ENV = "FIXMATCH_DATA"  # default data directory when --data-dir is not given
MIRROR_ENV = "FIXMATCH_DOWNLOAD_MIRROR"  # base URL that replaces every official host (mirrors, tests)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str


# Official sources. Tests (or a user behind a mirror) may edit this table or set MIRROR_ENV.
REMOTES: dict[str, Remote] = {
    "cifar-10-python.tar.gz": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
    ),
    "cifar-100-python.tar.gz": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"
    ),
    "train_32x32.mat": Remote(
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"
    ),
    "test_32x32.mat": Remote(
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"
    ),
    "extra_32x32.mat": Remote(
        "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"
    ),
}


def resolve_data_dir(data_dir) -> Path:
    """The directory to read: the argument, else $FIXMATCH_DATA, else ./data."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_ENV) or "data"
    return Path(data_dir).expanduser().absolute()  # errors then name the full path


def remote_url(filename: str) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + filename
    return REMOTES[filename].url


def download(url: str, dest_path, sha256: str | None = None, md5: str | None = None) -> Path:
    """Stream `url` to `dest_path`, verify its checksum, then move it into place atomically.

    The temp file sits next to the destination so the final rename never crosses filesystems,
    and a half-finished or corrupt download never appears under the real name.
    """
    if (sha256 is None) == (md5 is None):
        raise ValueError("give exactly one of sha256= or md5=")
    algo, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    dest = Path(dest_path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create download directory {dest.parent}: {e}") from None
    digest = hashlib.new(algo)
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != str(expected).lower():
            raise DataError(
                f"download of {url} is corrupt: {algo} {got}, expected {expected}. "
                f"Try again, or fetch it by hand and save it as {dest}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:  # ValueError: malformed URL
        os.unlink(tmp)
        raise DataError(f"could not download {url} ({e}). Fetch it by hand and save it as {dest}") from None
    except BaseException:
        os.unlink(tmp)
        raise
    return dest


def fetch(filename: str, data_dir: Path) -> Path:
    """Download one file of the REMOTES table into data_dir (from the mirror if one is set)."""
    return download(remote_url(filename), Path(data_dir) / filename, md5=REMOTES[filename].md5)


def known_data_dirs() -> list[Path]:
    """Where a user keeps datasets besides --data-dir: $FIXMATCH_DATA and ./data (nowhere else: the
    product looks where its users put data, not where its developers do)."""
    places = [os.environ.get(DATA_ENV), "data"]
    seen: dict[Path, None] = {}
    for place in places:
        if place:
            seen.setdefault(Path(place).expanduser().absolute().resolve(), None)
    return list(seen)


def found_elsewhere(data_dir: Path, files: list[str]) -> str:
    """A sentence naming a known place that holds one of `files`, with the flag that reads it ('' if none)."""
    for place in known_data_dirs():
        if place == Path(data_dir).resolve():
            continue
        there = [f for f in files if (place / f).exists()]
        if there:
            return f"\nFound {', '.join(there)} in {place}: pass --data-dir {place}"
    return ""


def missing_error(name: str, data_dir: Path, layouts: list[str], hint: str, files: tuple[str, ...] = ()) -> DataError:
    """One message naming every layout the loader accepts, so the user can pick any of them, and a
    known place that holds one of the dataset's `files`, if any."""
    lines = "\n".join(f"  - {layout}" for layout in layouts)
    elsewhere = found_elsewhere(data_dir, list(files))
    return DataError(f"{name}: no data found in {data_dir}. Expected one of:\n{lines}\n{hint}{elsewhere}")
