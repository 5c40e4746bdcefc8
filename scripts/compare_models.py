"""Promotion gate: replay labelled photos through the `stable` and `canary` model versions.

Command-line entry point over `clothing_tools.compare_models` (installed by `make sync`).
"""

import sys

from clothing_tools.compare_models import main

if __name__ == "__main__":
    sys.exit(main())
