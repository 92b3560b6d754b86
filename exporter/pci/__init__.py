"""The PCI bus as the kernel shows it in sysfs: NVIDIA GPU functions, their links and AER counts."""
