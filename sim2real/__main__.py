"""``python -m sim2real ...`` (and ``torchrun -m sim2real ...``): the ``sim2real`` command."""

import sys

from sim2real.cli import main

if __name__ == "__main__":
    sys.exit(main())
