"""`python -m xling.cli ...` (what torchrun starts: `torchrun ... -m xling.cli train CONFIG`)."""

import sys

from . import main

sys.exit(main())
