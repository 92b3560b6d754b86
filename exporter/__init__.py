"""rigwatch's Prometheus exporter: NVIDIA GPUs through NVML and the host through psutil."""

__version__ = "0.1.0"
