"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .cache import cache_key, find_cached, latest_for_serial, store
from .codes import CodeTable, check_codes, measure_codes
from .identify import Combination, Identifiability, identifiability, identifiable_space
from .estimates import Estimate, first_estimates, start_values
from .gradient import GradientFit, fit_gradient
from .noise import NoiseFloor, Spread, robust_loss
from .objective import DEFAULT_WEIGHTS, Objective, Score
from .result import CalibrationResult
from .space import Parameter, SearchSpace
from .spike_time import SpikeTimeObjective, isi_rate, isi_rate_loss
from .target import Target

__all__: list[str] = ["Parameter", "SearchSpace", "Objective", "Score", "DEFAULT_WEIGHTS",
                      "CalibrationResult", "cache_key", "find_cached", "latest_for_serial", "store",
                      "Target", "NoiseFloor", "Spread", "robust_loss",
                      "Combination", "Identifiability", "identifiability", "identifiable_space",
                      "CodeTable", "measure_codes", "check_codes",
                      "Estimate", "first_estimates", "start_values", "GradientFit", "fit_gradient",
                      "SpikeTimeObjective", "isi_rate", "isi_rate_loss"]
