"""The services the bot reads from: a capped, timed request and its errors (``fetch``), the
Prometheus client (``prometheus``), the Alertmanager client (``alertmanager``), what a PromQL
expression measures (``units``) and what an alert's chart and "Now:" line ask
(``alert_queries``)."""
