"""`python -m xling ...`: the same as the `xling` command."""

import sys

from .cli.main import main

sys.exit(main())
