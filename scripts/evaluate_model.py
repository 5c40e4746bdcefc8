"""Measure an exported model's top-1 accuracy on a dataset split, the way the gateway feeds it.

Command-line entry point over `clothing_tools.evaluate_model` (installed by `make sync`).
"""

import sys

from clothing_tools.evaluate_model import main

if __name__ == "__main__":
    sys.exit(main())
