"""dynacal.hardware: the physical Dynap-SE1 board (bias DAC, samna backend, twin board).

- :mod:`.biasgen`: the bias DAC, (coarse, fine) codes <-> currents; :mod:`.dacfile` its files;
- :mod:`.biasmap`: the 25 biases of a core <-> model parameters, bias files;
- :mod:`.codemap`: bias codes per core <-> per-core parameters, ``ChipLayers`` and a
  network's ``Params`` (the one mapping of the board, the twin and a calibration);
- :mod:`.config` and :mod:`.fpga`: a Network and its stimulus -> board configuration and
  FPGA spike-generator events, with every chip limit checked;
- :mod:`.samna_board`: the ``board`` backend (samna is imported only when it is used), with
  :mod:`.samna_device` (samna's API forms), :mod:`.attribution` (events -> sets by timestamp)
  and :mod:`.board_results` (checkpoints, the loss check, the Recording);
- :mod:`.board_check`: ``dynacal board check``, the first-board smoke test;
- :mod:`.fake_samna` and :mod:`.twin` (settings in :mod:`.twin_settings`): a fake samna
  (strict by default; the facts it follows, with sources, in :mod:`.fake_samna.facts`) with
  a simulated board behind it, the ``twin`` backend.

The core (``dynacal``) never imports this package; the backend registry names it.
"""

from .biasgen import BIAS_NAMES, BiasDAC, CodeResult
from .biasmap import (BIAS_MAP, BiasConstants, BiasReport, BiasSetting, currents_to_params, export_biases,
                      import_biases, params_to_codes, params_to_currents)
from .codemap import (codes_to_layers, codes_to_network_params, codes_to_params, core_codes_to_params, layers_to_codes,
                      network_params_to_codes, params_to_core_values)
from .config import BoardPlan, plan_network
from .dacfile import load_dac, save_dac
from .fpga import FpgaSchedule, schedule
from .samna_board import BoardBackend, BoardRunError
from .samna_detect import samna_status
from .twin import TwinBoard, TwinFaults, TwinNoise, twin_backend

__all__ = ["BIAS_NAMES", "BiasDAC", "CodeResult", "load_dac", "save_dac", "BIAS_MAP", "BiasConstants", "BiasReport", "BiasSetting",
           "currents_to_params", "params_to_currents", "params_to_codes", "export_biases", "import_biases",
           "core_codes_to_params", "codes_to_params", "codes_to_layers", "codes_to_network_params", "layers_to_codes",
           "params_to_core_values", "network_params_to_codes",
           "BoardPlan", "plan_network", "FpgaSchedule", "schedule", "BoardBackend", "BoardRunError",
           "samna_status", "TwinBoard", "TwinFaults", "TwinNoise", "twin_backend"]
