"""The former name of :mod:`dynacal.files`, kept while branches written before the rename
(fitting/_result_io.py, fitting/noise.py) are merged; new code imports ``dynacal.files``."""

from .files import atomic_hdf5, atomic_write, open_hdf5  # noqa: F401

__all__ = ["atomic_write", "atomic_hdf5", "open_hdf5"]
