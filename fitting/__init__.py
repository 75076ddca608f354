"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

The core never imports this package.
"""

from .objective import DEFAULT_WEIGHTS, Objective, Score
from .space import Parameter, SearchSpace

__all__: list[str] = ["Parameter", "SearchSpace", "Objective", "Score", "DEFAULT_WEIGHTS"]
