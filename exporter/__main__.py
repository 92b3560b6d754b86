"""`python -m exporter`: the same entry point as the `rigwatch-exporter` console script."""

import sys

from exporter.cli import main

sys.exit(main())
