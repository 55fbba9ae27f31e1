"""`python -m influencegate.cli` (and `torchrun -m influencegate.cli`): the `influencegate` command."""
import sys

from influencegate.cli import main

sys.exit(main())
