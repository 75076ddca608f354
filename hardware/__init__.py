"""dynacal.hardware: the physical Dynap-SE1 board (bias DAC, samna backend, twin board).

Planned in the board issue; nothing here yet. The core never imports this package.
"""

__all__: list[str] = []
