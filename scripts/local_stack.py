"""Run the model server and the gateway on loopback: `make local`.

Command-line entry point over `clothing_tools.local_stack` (installed by `make sync`).
"""

import sys

from clothing_tools.local_stack import main

if __name__ == "__main__":
    sys.exit(main())
