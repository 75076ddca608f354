"""A user cache of calibrations, per chip serial: the same calibration is never run twice, and a
lab finds last week's calibration of a board by its serial.

Layout: ``$DYNACAL_CACHE`` (default ``~/.cache/dynacal/calibrations``) ``/<serial>/<key>/``
holding ``calibration.json`` and ``calibration.npz`` (:mod:`.result`); ``<serial>`` is
``unknown`` for targets without a board. The key (:func:`cache_key`) hashes the target's
file hashes, the options and the software version, so a change in any of them is a miss.
An entry is written in a temporary folder and renamed into place (atomic).

Provenance: :func:`provenance` gives the dict a fitter puts in ``CalibrationResult.provenance``
(serial, versions, target hashes, options, timestamps, wall time); :func:`store` reads the
key's parts back from it (``target_hashes`` or ``hashes``, ``versions["dynacal"]``, and the
result's ``options``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
from pathlib import Path
from typing import Any, Mapping

from dynacal import __version__
from dynacal.errors import DynacalError, ParameterError

from .result import JSON_NAME, CalibrationResult, _jsonable

__all__ = ["cache_dir", "cache_key", "find_cached", "store", "latest_for_serial", "cached_for_serial",
           "provenance"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The cache root: ``$DYNACAL_CACHE`` or ``~/.cache/dynacal/calibrations``."""
    env = os.environ.get("DYNACAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dynacal" / "calibrations"


def _serial_dir(serial: Any) -> Path:
    name = "unknown" if serial is None else str(serial)
    if not name or any(ch in name for ch in "/\\\0") or name in (".", ".."):
        raise ParameterError(f"serial {serial!r} cannot name a cache folder; give the board's serial number.")
    return cache_dir() / name


def cache_key(target_hashes: Mapping[str, str], options: Any, version: str = __version__) -> str:
    """The key of a calibration: sha256 (first 16 hex digits) of the target's file hashes
    ({file name: sha256}), the options (a dict or dataclass) and the software version."""
    if not isinstance(target_hashes, Mapping):
        raise ParameterError(f"target_hashes must be {{file name: sha256}} (Target.hashes), not "
                             f"{type(target_hashes).__name__}.")
    text = json.dumps({"target": _jsonable(dict(target_hashes)), "options": _jsonable(options),
                       "version": str(version)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(*, serial: Any = None, target_hashes: Mapping[str, str] | None = None, options: Any = None,
               started: str | None = None, wall_s: float | None = None, source: str | None = None) -> dict:
    """The provenance dict of a calibration: board serial, software versions, target file
    hashes, options, start/finish timestamps (UTC ISO 8601) and wall time in s."""
    versions = {"dynacal": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "optuna", "numba"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001  (an optional package that is absent or broken is not recorded)
            continue
    return _jsonable({"serial": serial, "source": source, "versions": versions,
                      "target_hashes": dict(target_hashes or {}), "options": options or {},
                      "started": started or _now(), "finished": _now(), "wall_s": wall_s,
                      "host": platform.node()})


def _key_of(result: CalibrationResult) -> str:
    prov = result.provenance
    version = (prov.get("versions") or {}).get("dynacal", __version__)
    hashes = prov.get("target_hashes") or prov.get("hashes") or {}  # "hashes": as calibrate() names them
    return cache_key(hashes, result.options or prov.get("options") or {}, version)


def store(result: CalibrationResult) -> Path:
    """Keep ``result`` in the cache under its serial and key (from its provenance and options).

    Returns:
        The entry's folder.
    """
    folder = _serial_dir(result.serial) / _key_of(result)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{secrets.token_hex(6)}.tmp"
    old = folder.parent / f".{folder.name}.{secrets.token_hex(6)}.old"
    try:
        result.save(tmp)
        if folder.exists():  # a directory rename cannot replace a full one: move the old aside first
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
    log.info("calibration cached in %s", folder)
    return folder


def find_cached(serial: Any, target_hashes: Mapping[str, str], options: Any,
                version: str = __version__) -> CalibrationResult | None:
    """The cached calibration of this target, options and version, or None (a damaged entry
    is logged and treated as a miss)."""
    folder = _serial_dir(serial) / cache_key(target_hashes, options, version)
    if not (folder / JSON_NAME).exists():
        return None
    try:
        return CalibrationResult.load(folder)
    except DynacalError as exc:
        log.warning("ignoring the damaged cache entry %s: %s", folder, exc)
        return None


def cached_for_serial(serial: Any) -> list[Path]:
    """Every cache entry of a board, newest first (by the time it finished)."""
    root = _serial_dir(serial)
    entries = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")] if root.is_dir() else []

    def finished(d: Path) -> str:
        try:
            return str(json.loads((d / JSON_NAME).read_text()).get("provenance", {}).get("finished") or "")
        except (OSError, ValueError):
            return ""
    return sorted(entries, key=lambda d: (finished(d), (d / JSON_NAME).stat().st_mtime
                                          if (d / JSON_NAME).exists() else 0.0), reverse=True)


def latest_for_serial(serial: Any) -> CalibrationResult | None:
    """The newest readable calibration of board ``serial`` in the cache, or None."""
    for folder in cached_for_serial(serial):
        try:
            return CalibrationResult.load(folder)
        except DynacalError as exc:
            log.warning("ignoring the damaged cache entry %s: %s", folder, exc)
    return None
