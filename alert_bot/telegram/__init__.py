"""Everything that talks to Telegram: the Bot API client and the verdicts its errors make
(``client``), Telegram's HTML and its length rules (``html``), and the bot's own flood limits
(``flood``)."""
