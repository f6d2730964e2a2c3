"""`python -m xling.cli ...` (what torchrun starts: `torchrun ... -m xling.cli train CONFIG`)."""

import sys

from .main import main

sys.exit(main())
