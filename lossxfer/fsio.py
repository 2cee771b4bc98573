"""Atomic, never-clobbering file output and content hashes.

Every artifact is written to a temporary file in the destination directory, fsynced and renamed
into place, so a killed process never leaves a truncated file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lossxfer.errors import InputError, LossxferError, UsageError


def check_output(path: str | os.PathLike[str], force: bool) -> Path:
    """Refuse to overwrite an existing output unless --force; make sure its folder exists."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{out}: is a directory, expected a file path")
    if out.exists() and not force:
        raise UsageError(f"{out}: exists (use --force to overwrite)")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():  # before any work, not at the end when writing fails
        raise UsageError(f"{out}: cannot be created, {folder} is not a directory")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`.

    On any exception the temporary file is removed and nothing appears under `path`.
    """
    final = check_output(path, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise LossxferError(f"{final}: cannot write: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise LossxferError(f"{final}: no space left on device; nothing was written") from exc
        raise LossxferError(f"{final}: cannot write: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


STALE_AFTER_S = 600.0


def remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries of `final` that a killed writer left (untouched for 10 minutes).

    A live writer touches its temporary as it writes; a killed one (SIGKILL at the end of a
    preemption grace period) leaves it behind, and a requeued job would pile them up.
    """
    now = time.time()
    for leftover in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_AFTER_S:
                leftover.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    with atomic_path(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def require_file(path: str | os.PathLike[str]) -> Path:
    """An input file that must exist, be a regular file and be non-empty (else exit 3)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    return p


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
