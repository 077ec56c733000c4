"""`python -m medfit ...` (also what `torchrun -m medfit` runs)."""

import sys

from medfit.cli import main

sys.exit(main())
