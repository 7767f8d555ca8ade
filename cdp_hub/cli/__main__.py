"""``python -m cdp_hub.cli``: the ``cdp-hub`` command."""

import sys

from cdp_hub.cli import main

sys.exit(main())
