"""Owns file safety for every command that writes (training, restoration, the scripts): files
written whole or not at all, earlier outputs moved aside and never deleted, output folders that
would destroy or pollute an input refused, and a lock that keeps a second writer out of a folder
while a run uses it.

It sits in `datasets/` (the bottom layer) because image writing (datasets/image_files.py) and the
restoration report (evaluation/report.py) use it as well as the runners and scripts.

- `atomic_write(path, write)`: write(tmp) then rename; on any failure the temporary is removed, and a
  full disk is a `DiskFull` error that says so.
- `check_output_location`: an output that is a file, is or lies inside a data folder, or contains a
  data folder or anything else the run reads is refused (with or without --overwrite).
- `FolderLock`: an exclusive lock on an output folder for the whole run, held in a lock file beside
  the folder (so moving the folder aside never moves the lock). The file names the owner (pid, host,
  command); the lock itself is an flock, which the kernel releases however the owner ends (kill -9
  included), so a lock file nobody holds is stale and is taken over.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import socket
import sys
import time
from collections.abc import Callable

from datasets.errors import HGMError

try:
    import fcntl
except ImportError:  # not on Windows: the lock falls back to an exclusively created file and a pid check
    fcntl = None

log = logging.getLogger("hgm")

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class DiskFull(HGMError, OSError):
    """No space left (or a quota reached) while writing a file; nothing partial was left behind."""


def temporary_name(path: str) -> str:
    """Where `atomic_write` writes `path` first (`remove_stale_temporaries` knows the pattern)."""
    return f"{path}.tmp-{os.getpid()}"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Create `path` whole or not at all: `write(tmp)` writes a temporary beside it, which is then renamed
    over `path`. Whatever stops the write, the temporary is removed; a full disk raises DiskFull."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in _FULL:
            err = DiskFull(f"no space left on the device writing {path} ({os.strerror(e.errno)}); the partial "
                           f"file was removed: free some space and run again")
            err.errno = e.errno
            raise err from e
        raise
    finally:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            log.warning("could not remove the temporary %s", tmp)


def write_text(path: str, text: str) -> None:
    """A text file written atomically."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            f.write(text)
    atomic_write(path, write)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the `*.tmp-PID` files a killed process left in `folder` (those of a running process stay)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp-*")):
        pid = path.rsplit("-", 1)[-1]
        if not pid.isdigit() or (int(pid) != os.getpid() and pid_alive(int(pid))):
            continue
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def move_aside(path: str, tag: str = "replaced") -> str:
    """Rename `path` to a fresh `<path>.<tag>-<time>[-n]` (nothing is ever deleted); returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    new, n = f"{path}.{tag}-{stamp}", 1
    while os.path.exists(new):
        n += 1
        new = f"{path}.{tag}-{stamp}-{n}"
    os.rename(path, new)
    return new


# ----------------------------------------------------------------------------- where outputs may go

def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (both resolved, symlinks included)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(os.path.join(folder, ""))


def check_output_location(out: str, flag: str = "-o", data: dict[str, str | None] | None = None,
                          keep: dict[str, str | None] | None = None) -> None:
    """Refuse an output folder that would destroy or pollute an input, with or without --overwrite
    (which moves the output aside): one that is a file; one that is, lies inside or contains a folder
    read as data (`data`, {what: path}: files written inside it would be read as data next time); one
    that is or contains anything in `keep` ({what: path}, e.g. the checkpoint or the mask)."""
    probe = out
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(os.path.normpath(probe))
        probe = parent if parent != probe else ""
    if probe and not os.path.isdir(probe):
        where = "is a file" if os.path.normpath(probe) == os.path.normpath(out) else f"lies under the file {probe}"
        raise HGMError(f"{flag} {out} {where}, not a folder; name an output folder")
    for what, path in (data or {}).items():
        if not path:
            continue
        if os.path.realpath(out) == os.path.realpath(path):
            raise HGMError(f"{flag} {out} is {what}; choose an output folder outside it")
        if inside(out, path):
            raise HGMError(f"{flag} {out} is inside {what}={path}, where its files would be read as data; "
                           f"choose an output folder outside it")
        if inside(path, out):
            raise HGMError(f"{flag} {out} contains {what}={path}; choose another output folder")
    for what, path in (keep or {}).items():
        if path and os.path.exists(path) and inside(path, out):
            raise HGMError(f"{flag} {out} contains {what} {path}; choose another output folder")


def prepare_output(out: str, overwrite: bool = False, flag: str = "-o") -> None:
    """Create the output folder; one that holds results is refused, or with `overwrite` moved aside.
    Call it holding the folder's lock, so no other run is using what is moved."""
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise HGMError(f"output folder {out} already holds results; choose another {flag} "
                           f"or pass --overwrite (the old folder is renamed, not deleted)")
        log.warning("moved the earlier %s to %s", out, move_aside(out))
    os.makedirs(out, exist_ok=True)


# ----------------------------------------------------------------------------- one writer per folder

def lock_path(folder: str) -> str:
    """The lock file of `folder`: `.<name>.lock` beside it."""
    folder = os.path.normpath(os.path.abspath(folder))
    return os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.lock")


def _owner_text() -> str:
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {cmd}"


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace").strip()


class FolderLock:
    """Hold `folder` for one run: a second run that asks for it is refused at its start, naming the first.

        with FolderLock(out, "output folder"):
            ...  # move an old folder aside, write the outputs

    Re-entrant only through the same object; two objects on one folder exclude each other even in one
    process."""

    def __init__(self, folder: str, what: str = "output folder"):
        self.folder, self.what = folder, what
        self.path = lock_path(folder)
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _refuse(self, owner: str) -> HGMError:
        return HGMError(f"{self.what} {self.folder} is in use by another run ({owner or 'owner unknown'}; lock "
                        f"{self.path}); wait for it to end or choose another folder")

    def acquire(self) -> None:
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if fcntl is None:
            return self._acquire_by_pid()
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = _read(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(owner) from None
                raise
            try:  # the previous holder may have removed the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _read(fd)
            if stale:
                log.info("taking over the lock of %s, left by a run that ended without releasing it (%s)",
                         self.folder, stale)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (_owner_text() + "\n").encode())
            self._fd = fd
            return
        raise HGMError(f"could not lock {self.folder}: {self.path} keeps changing")

    def _acquire_by_pid(self) -> None:
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    owner = f.read().strip()
                words = owner.split()
                if len(words) > 1 and words[1].isdigit() and pid_alive(int(words[1])):
                    raise self._refuse(owner) from None
                log.info("taking over the stale lock of %s (%s)", self.folder, owner or "empty")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            os.write(fd, (_owner_text() + "\n").encode())
            self._fd = fd
            return
        raise HGMError(f"could not lock {self.folder}: {self.path} keeps changing")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.remove(self.path)  # while still holding it: a waiting run then locks a fresh file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
