"""`python -m devserver`: see devserver.cli."""

from devserver.cli import main

raise SystemExit(main())
