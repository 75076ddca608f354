"""dynacal.fitting: search spaces, objectives, the Optuna and gradient fitters.

Planned in the fitting issue; nothing here yet. The core never imports this package.
"""

__all__: list[str] = []
