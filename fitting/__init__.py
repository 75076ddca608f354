"""dynacal.fitting: targets, search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .cache import cache_key, find_cached, latest_for_serial, store
from .noise import NoiseFloor, Spread, robust_loss
from .result import CalibrationResult
from .target import Target

__all__: list[str] = ["CalibrationResult", "cache_key", "find_cached", "latest_for_serial", "store",
                      "Target", "NoiseFloor", "Spread", "robust_loss"]
