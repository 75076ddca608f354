"""Characterisation protocols (planned in the protocols issue)."""

__all__: list[str] = []
