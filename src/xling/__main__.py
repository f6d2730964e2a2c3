"""`python -m xling ...`: the same as the `xling` command."""

import sys

from .cli import main

sys.exit(main())
