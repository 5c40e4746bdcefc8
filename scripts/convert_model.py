"""Convert a Keras model (.keras or legacy .h5) into a TF Serving SavedModel version folder.

Command-line entry point over `clothing_tools.convert_model` (installed by `make sync`).
"""

import sys

from clothing_tools.convert_model import main

if __name__ == "__main__":
    sys.exit(main())
