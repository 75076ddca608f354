"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .estimates import Estimate, first_estimates, start_values
from .gradient import GradientFit, fit_gradient
from .spike_time import SpikeTimeObjective, isi_rate, isi_rate_loss

__all__: list[str] = ["Estimate", "first_estimates", "start_values", "GradientFit", "fit_gradient",
                      "SpikeTimeObjective", "isi_rate", "isi_rate_loss"]
