"""The chat side of the bot: the update loop (``updates``), the command table (``commands``)
and the handlers, grouped by what they serve: ``rig_state`` (/status /gpu /cpu),
``alertmanager`` (/alerts /silences and the buttons), ``graph`` and ``welcome`` (/start /help)."""
