"""What rigwatch's two programs, the exporter and the alert bot, say and do the same way:
log setup (one line format, one logger naming scheme), a condition logged once, the words of a
boolean setting, the environment (unknown variables, listen addresses) and the retry backoff."""
