"""Opening a run folder so that results are never lost or mixed.

- **Whose folder.** A run folder starts with `run.json`, the marker that says it is a
  run of ours. A folder that holds anything else (`--out .`, a data folder) is refused,
  naming some of what it holds; an empty or absent one becomes a new run.
- **One run at a time.** `run.lock` is locked with `fcntl.flock` for the whole run; a
  second run on the same folder is refused while the first holds it, with the holder's
  pid, host and start time. The kernel releases the lock when its process ends, however
  it ends (`kill -9` included), so a lock is never stale and needs no heartbeat; the
  file itself stays. Where the file system cannot lock (some network mounts; Windows),
  the run says so and goes on unprotected.
- **Which run to resume.** `--resume` without `--out` takes the newest
  `runs/<name>-<YYYYmmdd-HHMMSS>[-N]` run of exactly that config name (`exp` does not
  match `exp-lr`).
- **Same experiment.** A resumed run must have the config it started with: each
  differing key is named with both values. `SAFE_CHANGES` (more epochs, how often to
  checkpoint, evaluation chunking, steps per call, the device layout) may be allowed
  one key at a time; allowed changes are recorded in `run.json`.
"""

import datetime
import json
import os
import pathlib
import re
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any

from . import _run_folder as files
from ._yaml import short

MARKER = "run.json"
LOCK = "run.lock"
FORMAT = "perturbed-layers run"
_STAMP = r"\d{8}-\d{6}(?:-(\d+))?"

# Keys whose change leaves a resumed run the same experiment: more epochs, when to
# checkpoint, evaluation chunking, the steps per compiled call, the device layout.
SAFE_CHANGES = (
    "training.epochs",
    "training.checkpoint_every",
    "training.eval_batch_size",
    "training.steps_per_call",
    "mesh.*",
    "distributed.*",
)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message names it and why."""


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ------------------------------------------------------------------ finding runs


def default_run_folder(
    name: str, root: pathlib.Path = pathlib.Path("runs")
) -> pathlib.Path:
    """`runs/<name>-<YYYYmmdd-HHMMSS>`, with `-2`, `-3`, … if that exists already."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, count = root / f"{name}-{stamp}", 1
    while folder.exists():
        count += 1
        folder = root / f"{name}-{stamp}-{count}"
    return folder


def runs_of(name: str, root: pathlib.Path = pathlib.Path("runs")) -> list[pathlib.Path]:
    """The run folders `root/<name>-<stamp>[-N]` of exactly this config name, oldest
    first (a longer name such as `<name>-lr` is another config)."""
    pattern = re.compile(re.escape(name) + "-" + _STAMP)
    found = []
    for path in root.glob(f"{glob_escape(name)}-*"):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and is_run(path):
            stamp = path.name[len(name) + 1 : len(name) + 16]
            found.append((stamp, int(match[1] or 1), path))
    return [path for *_, path in sorted(found)]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def is_run(folder: pathlib.Path) -> bool:
    """Whether `folder` holds a run of ours (its `run.json` says so)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == FORMAT


# ------------------------------------------------------------------ config changes


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        items: dict[str, Any] = {}
        for key, value in tree.items():
            items.update(_flat(value, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: tree}


def config_changes(saved: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    """Each dotted key whose value differs between two raw configs: (saved, new);
    a key absent on one side has the value `<absent>` there."""
    a, b = _flat(saved), _flat(new)
    absent = "<absent>"
    return {
        key: (a.get(key, absent), b.get(key, absent))
        for key in sorted(a.keys() | b.keys())
        if a.get(key, absent) != b.get(key, absent)
    }


def is_safe_change(key: str) -> bool:
    return any(
        key == safe or (safe.endswith(".*") and key.startswith(safe[:-1]))
        for safe in SAFE_CHANGES
    )


def check_changes(
    changes: Mapping[str, tuple[Any, Any]], allowed: Collection[str], folder: str
) -> None:
    """Refuse changes not in `allowed`, naming each with both values.

    **Raises:** `RunFolderError`; also for an allowed key that is not safe.
    """
    unsafe = sorted(key for key in allowed if not is_safe_change(key))
    if unsafe:
        raise RunFolderError(
            f"--allow-change {', '.join(unsafe)}: not a change a run can take "
            f"half-way; only {', '.join(SAFE_CHANGES)} can be allowed (start a new "
            "run for the others)"
        )
    refused = {k: v for k, v in changes.items() if k not in allowed}
    if not refused:
        return
    lines = "\n".join(
        f"  {key}: {short(old)} in the run, {short(new)} now"
        + ("  (allow with --allow-change " + key + ")" if is_safe_change(key) else "")
        for key, (old, new) in refused.items()
    )
    raise RunFolderError(
        f"--resume: the config differs from the one {folder} was started with:\n"
        f"{lines}\nresume with the run's own config ({folder}/{files.CONFIG}), or "
        "start a new run with --out elsewhere"
    )


# ------------------------------------------------------------------ the folder


def _lock_error(folder: pathlib.Path, fd: int) -> RunFolderError:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        who = (
            f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
            if isinstance(holder, dict) and {"pid", "host", "since"} <= holder.keys()
            else "another process"
        )
    except (OSError, ValueError):
        who = "another process"
    return RunFolderError(
        f"{folder} is in use by another run ({who}): wait for it to end, or choose "
        "another --out"
    )


class RunFolder:
    """A run folder held by this process: checked, locked, released by `close()`.

    Open it with `open_run`; `start()` writes the marker when the run first writes.
    """

    def __init__(self, folder: pathlib.Path, created: bool, fd: int | None):
        self.folder, self._created, self._fd = folder, created, fd

    def start(self, name: str) -> None:
        """Write `run.json` (once): from now on the folder is a run of ours."""
        if not is_run(self.folder):
            marker = {"format": FORMAT, "name": name, "created": _now(), "resumes": []}
            files.write_text(self.folder / MARKER, json.dumps(marker, indent=2) + "\n")

    def record_resume(self, epoch: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """Add a resume (its time, checkpoint epoch and allowed changes) to `run.json`."""
        marker = json.loads((self.folder / MARKER).read_text())
        entry = {
            "time": _now(),
            "from_epoch": epoch,
            "changes": {k: {"was": a, "now": b} for k, (a, b) in changes.items()},
        }
        marker.setdefault("resumes", []).append(entry)
        files.write_text(self.folder / MARKER, json.dumps(marker, indent=2) + "\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        # A run that never wrote leaves nothing behind (the folder, if it made it).
        # Best effort: this runs on the way out of errors it must not hide.
        try:
            if {p.name for p in self.folder.iterdir()} <= {LOCK}:
                (self.folder / LOCK).unlink(missing_ok=True)
                if self._created:
                    self.folder.rmdir()
        except OSError:
            pass


def _lock(folder: pathlib.Path, log: Callable[[str], None]) -> int | None:
    try:
        import fcntl
    except ImportError:
        log(f"note: cannot lock {folder} on this platform; nothing stops a second run")
        return None
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        error = _lock_error(folder, fd)
        os.close(fd)
        raise error from None
    except OSError as error:  # a file system without locks
        os.close(fd)
        log(
            f"note: cannot lock {folder} ({error.strerror}); nothing stops a second run"
        )
        return None
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _refuse_foreign(folder: pathlib.Path) -> None:
    entries = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
    if entries and not is_run(folder):
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise RunFolderError(
            f"--out {folder}: the folder holds files that are not a perturbed-layers "
            f"run ({shown}); choose a new or empty folder"
        )


def _check(folder: pathlib.Path, *, resume: bool) -> None:
    _refuse_foreign(folder)
    ours = is_run(folder)
    if ours and not resume:
        raise RunFolderError(
            f"{folder} already holds a run: pass --resume to continue it, or choose "
            "another --out"
        )
    if resume and not ours:
        raise RunFolderError(f"--resume: {folder} holds no run to resume")


def open_run(
    folder: pathlib.Path, *, resume: bool, log: Callable[[str], None] = print
) -> RunFolder:
    """Lock and check a run folder for a new run (`resume=False`) or to resume one.

    **Raises:** `RunFolderError` for a file, an unwritable path, a run in use, a
    folder that holds something else, a run without `resume`, no run with `resume`.
    """
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder}: is a file, not a folder")
    if resume and not folder.is_dir():
        raise RunFolderError(f"--resume: {folder} does not exist")
    existed = folder.is_dir()
    if existed:
        _refuse_foreign(folder)  # before leaving a lock file in someone's folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(folder, log)
    except OSError as error:
        raise RunFolderError(
            f"--out {folder}: cannot write the run folder: "
            f"{error.strerror or error} ({error.filename or folder})"
        ) from None
    run = RunFolder(folder, created=not existed, fd=fd)
    try:  # under the lock: no other run changes the folder while it is read
        _check(folder, resume=resume)
    except BaseException:
        run.close()
        raise
    return run
