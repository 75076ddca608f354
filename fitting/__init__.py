"""dynacal.fitting: targets, search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .noise import NoiseFloor, Spread, robust_loss
from .target import Target

__all__: list[str] = ["Target", "NoiseFloor", "Spread", "robust_loss"]
