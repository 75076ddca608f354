"""``python -m dynacal``: the same as the ``dynacal`` command."""

import sys

from .cli import main

sys.exit(main())
