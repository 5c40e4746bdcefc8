"""Train the compact demo clothing classifier from scratch on CPU and save it as .keras.

Command-line entry point over `clothing_tools.train_demo_model` (installed by `make sync`).
"""

import sys

from clothing_tools.train_demo_model import main

if __name__ == "__main__":
    sys.exit(main())
