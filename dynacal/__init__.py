"""dynacal: hardware-in-the-loop calibration of the Dynap-SE1 neuromorphic processor.

The core: parameters (``params``), topology (``chip``), input (``stimulus``), experiments,
recordings and the backends. Optional parts (brian2, the board, fitting) are imported
only when used.
"""

from .chip import Chip, Network
from .errors import (BackendUnavailable, BoardError, CalibrationFailed, DynacalError, NetworkError,
                     ParameterError, RecordingError)
from .experiment import Experiment
from .layers import ChipLayers
from .params import INITIAL_STATE, PARAMETERS, STATE_NAMES, SYNAPSE_TYPES, Params
from .recording import Recording
from .stimulus import Stimulus, poisson, regular
from .backends import get_backend

__version__ = "0.1.0"

__all__ = ["Chip", "Network", "Experiment", "Params", "PARAMETERS", "INITIAL_STATE", "STATE_NAMES",
           "SYNAPSE_TYPES", "ChipLayers", "Recording", "Stimulus", "poisson", "regular", "get_backend",
           "DynacalError", "ParameterError", "NetworkError", "BackendUnavailable", "RecordingError",
           "BoardError", "CalibrationFailed", "__version__"]
