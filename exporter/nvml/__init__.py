"""NVML for the exporter: `session` (init, re-init, supervisor), `device` (a card's handle,
identity, static facts), `errors` (what NVML's answers mean) and `pynvml_internals` (the one
place that reaches past pynvml's public calls)."""
