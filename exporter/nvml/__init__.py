"""NVML for the exporter: `session` (init, re-init, supervisor), `device` (a card's handle,
identity, static facts), `errors` (what NVML's answers mean), `rwlock` (reads against
re-initialisation) and `processes` (process lists and utilisation)."""
