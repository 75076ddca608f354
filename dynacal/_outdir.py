"""Output folders that keep their promises: one consistent run per folder, told by a manifest.

A command that writes a folder of results (``dynacal characterize``; calibration and report
commands follow the same rule) opens it with :class:`RunFolder`:

- the folder is made and checked writable by writing a probe file there, before any
  computation (``os.access`` says yes to root even where writing fails);
- ``manifest.json`` describes the run: its id, the command, its options, and every file it
  finished with its SHA-256 and size; it is rewritten atomically after each file, so an
  interrupted run leaves a folder that says which parts are done;
- a folder that holds another run (a manifest with files, or any other file) is refused
  unless told ``resume`` (finished parts whose options and hashes match are reused) or
  ``overwrite`` (the old run's files are removed first);
- files are written atomically (:mod:`dynacal.files`): nothing the user had is replaced
  by a partial file; the temporary files of a run killed outright (``kill -9``) are
  removed when the folder is opened next.

Interruptions: :func:`terminate_on_sigterm` turns SIGTERM into :class:`Terminated` (a
``KeyboardInterrupt``), so that the same clean-up runs as for Ctrl-C; :class:`RunFolder`
used as a context manager marks the manifest ``interrupted`` and attaches the folder and its
finished files to the exception (``exc.kept``) for the one-line message of the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from .files import atomic_write
from .errors import ParameterError

__all__ = ["RunFolder", "MANIFEST", "MODES", "Terminated", "terminate_on_sigterm", "check_interrupt",
           "interrupt_handled", "file_hash"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT = "dynacal-run/1"
MODES = ("new", "resume", "overwrite")
# the temporary names of files.atomic_write / atomic_hdf5: .<name>.<12 hex>.tmp
_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM (exit code 143)."""


# The interruption being delivered: h5py runs Python callbacks inside its C code, and an
# exception raised there is printed and dropped ("Exception ignored"), so a Ctrl-C during a
# save would be lost; the atomic writers look here before they rename (check_interrupt).
_pending: list[type[KeyboardInterrupt]] = []


@contextlib.contextmanager
def terminate_on_sigterm():
    """Within: SIGTERM raises :class:`Terminated` once (a second one during the clean-up is
    ignored) and SIGINT raises ``KeyboardInterrupt`` even where a parent ignored it; either
    is remembered until handled (:func:`check_interrupt`). The previous handlers come back
    after. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _pending[:] = [Terminated]
        raise Terminated()

    def on_int(signum, frame):
        _pending[:] = [KeyboardInterrupt]
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
        _pending.clear()


def check_interrupt() -> None:
    """Raise again an interruption that arrived and was not handled yet (one that a library
    callback swallowed); the atomic writers call it before they put a file in place."""
    if _pending:
        raise _pending[0]()


def interrupt_handled() -> None:
    """The interruption is being handled (its clean-up may write files again)."""
    _pending.clear()


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunFolder:
    """The output folder of one run.

    Args:
        path: the folder (created).
        command: the command, for the manifest (``"dynacal characterize"``).
        options: JSON-able options that decide the results; a resumed run must give the
            same ones.
        mode: ``"new"`` (refuse a folder that holds another run), ``"resume"`` or
            ``"overwrite"``.
        option: how the folder was given, for messages.

    Raises:
        ParameterError: the folder cannot be written, holds another run (mode ``new``),
            or holds a run with other options (mode ``resume``).
    """

    def __init__(self, path: str | os.PathLike, command: str, options: Mapping[str, Any], *, mode: str = "new",
                 option: str = "output folder"):
        if mode not in MODES:
            raise ParameterError(f"mode {mode!r} is not one of {', '.join(MODES)}.")
        self.path, self.command, self.option = Path(path), command, option
        self.options = json.loads(json.dumps(options, sort_keys=True, default=str))
        self._probe()
        self._clear_temporaries()
        old = self._read_manifest()
        self.reusable: dict[str, dict] = {}
        if mode == "resume" and old is not None:
            self._check_resume(old)
            self.reusable = dict(old["files"])
        elif mode == "overwrite":
            self._remove(old)
        else:
            self._check_free(old, resume=mode == "resume")
        self.run_id = old["run_id"] if (mode == "resume" and old) else secrets.token_hex(8)
        self.files: dict[str, dict] = {}
        self.status = "running"
        self._write_manifest()

    # --- opening ------------------------------------------------------------------------

    def _probe(self) -> None:
        where = f"{self.option} {self.path}"
        parent = self.path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ParameterError(f"{where} cannot be created: {parent} is a file, not a folder; choose another path.")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-probe.{secrets.token_hex(6)}.tmp"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            probe.unlink()
        except OSError as exc:
            raise ParameterError(f"{where} cannot be written ({exc.strerror or exc}); choose another folder.") from None

    def _clear_temporaries(self) -> None:
        for entry in self.path.iterdir():
            if entry.is_file() and _TMP.match(entry.name):
                log.info("removing %s, a temporary file of an earlier run that was killed", entry)
                entry.unlink(missing_ok=True)

    def _read_manifest(self) -> dict | None:
        path = self.path / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
                raise ValueError("not a dynacal run manifest")
        except (OSError, ValueError) as exc:
            raise ParameterError(f"{self.option} {self.path} holds a {MANIFEST} that is not readable ({exc}); "
                                 f"pass --overwrite (mode='overwrite') to replace the folder's run, or choose another "
                                 f"folder.") from None
        return data

    def _others(self, old: dict | None) -> list[str]:
        """Names in the folder that another run (or the user) put there."""
        names = sorted(e.name for e in self.path.iterdir() if e.name != MANIFEST)
        return names if old is None else sorted(set(names) | set(old["files"]))

    def _check_free(self, old: dict | None, *, resume: bool) -> None:
        names = self._others(old)
        if not names:
            return
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        what = (f"run {old['run_id']} of {old['command']} ({old['status']})" if old else "files of no dynacal run")
        hint = "it has no manifest to resume from; pass " if resume else "pass --resume (mode='resume') to finish it, "
        raise ParameterError(f"{self.option} {self.path} holds {what}: {shown}; {hint}--overwrite (mode='overwrite') "
                             f"to replace it, or choose another folder.")

    def _check_resume(self, old: dict) -> None:
        if old["command"] != self.command or old["options"] != self.options:
            keys = sorted(k for k in set(old["options"]) | set(self.options)
                          if old["options"].get(k) != self.options.get(k))
            diff = "; ".join(f"{k}: {_short(old['options'].get(k))} then, {_short(self.options.get(k))} now"
                             for k in keys)
            raise ParameterError(f"{self.option} {self.path} holds run {old['run_id']} of {old['command']} with other "
                                 f"options ({diff or 'another command'}); --resume needs the same options: give "
                                 f"them, pass --overwrite (mode='overwrite'), or choose another folder.")

    def _remove(self, old: dict | None) -> None:
        for name in (old or {}).get("files", {}):
            (self.path / name).unlink(missing_ok=True)
        (self.path / MANIFEST).unlink(missing_ok=True)

    # --- parts --------------------------------------------------------------------------

    def reuse(self, name: str) -> Path | None:
        """The file ``name`` of the resumed run when it is intact (same hash); it is then
        part of this run too. None when there is none to reuse."""
        entry = self.reusable.get(name)
        path = self.path / name
        if entry is None or not path.is_file():
            return None
        if path.stat().st_size != entry["bytes"] or file_hash(path) != entry["sha256"]:
            log.info("%s changed since run %s wrote it; making it again", path, self.run_id)
            return None
        self.files[name] = entry
        self._write_manifest()
        return path

    def add(self, path: str | os.PathLike, part: str | None = None) -> Path:
        """Record a finished file of this run (its hash) in the manifest."""
        path = Path(path)
        self.files[path.name] = {"sha256": file_hash(path), "bytes": path.stat().st_size, "part": part}
        self._write_manifest()
        return path

    def finish(self) -> None:
        """Mark the run complete."""
        self.status = "complete"
        self._write_manifest()

    def _write_manifest(self) -> None:
        data = {"format": FORMAT, "run_id": self.run_id, "command": self.command, "options": self.options,
                "status": self.status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": self.files}
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        atomic_write(self.path / MANIFEST, lambda fh: fh.write(text.encode()))

    # --- interruptions ------------------------------------------------------------------

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None or self.status == "complete":
            return
        if isinstance(exc, KeyboardInterrupt):
            interrupt_handled()
        self.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            self._write_manifest()
        except BaseException:  # noqa: BLE001  (a second signal or a full disk: the first error is the one to tell)
            log.warning("could not mark %s %s", self.path / MANIFEST, self.status)
        exc.kept = (self.path, sorted(self.files))


def _short(value: Any) -> str:
    """An option's value for a message: the names of described objects, else a short repr."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        value = [v["name"] for v in value]  # protocols: their names say enough
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
