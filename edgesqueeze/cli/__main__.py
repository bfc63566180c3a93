"""`python -m edgesqueeze.cli ...` (the systemd unit starts the camera demo this way)."""

import sys

from . import main

sys.exit(main())
