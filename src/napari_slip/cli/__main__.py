"""``python -m napari_slip.cli``."""

import sys

from . import main

sys.exit(main())
