"""`python -m alert_bot` runs the bot (same as the `rigwatch-bot` command)."""

import sys

from alert_bot.cli import main

sys.exit(main())
