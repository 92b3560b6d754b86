"""What the bot's long-running parts share: the loop every worker thread runs (``loop``) and the
bot's own metrics (``metrics``)."""
