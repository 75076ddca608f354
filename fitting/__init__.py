"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

Planned in the fitting issue; nothing here yet. The core never imports this package.
"""

__all__: list[str] = []

from .identify import Combination, Identifiability, identifiability, identifiable_space  # noqa: E402  (ident)

__all__ += ["Combination", "Identifiability", "identifiability", "identifiable_space"]
