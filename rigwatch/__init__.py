"""What rigwatch's two programs, the exporter and the alert bot, say and do the same way:
log setup (one line format, one logger naming scheme) and the retry backoff."""
