"""`python -m benchmarks.capacity`: see benchmarks/capacity/report.py."""

import sys

from benchmarks.capacity.report import main

sys.exit(main())
