"""Alertmanager's notifications in the bot: the webhook read into typed alerts and routed to chats
(``webhook``), each alert rendered as Telegram HTML (``render``), blocks packed into messages
(``messages``), silence matchers and links (``silences``), what Prometheus says of an alert now
(``current``) and the dead man's switch on the Watchdog alert (``watchdog``)."""
