"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .cache import cache_key, find_cached, latest_for_serial, store
from .result import CalibrationResult

__all__: list[str] = ["CalibrationResult", "cache_key", "find_cached", "latest_for_serial", "store"]
