"""Charts: what to ask Prometheus for an alert or a /graph (``queries``) and the drawing itself
(``figure``)."""
