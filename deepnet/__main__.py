"""``python -m deepnet``: the same as the ``deepnet`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
