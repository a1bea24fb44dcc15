"""``python -m codehub.operator.cli``: the same as the ``codehub`` script."""

import sys

from codehub.operator.cli import main

sys.exit(main())
