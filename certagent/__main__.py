"""`python -m certagent`: the same shell as the console script."""

import sys

from .cli import main

sys.exit(main())
