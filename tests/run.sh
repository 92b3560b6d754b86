#!/usr/bin/env bash
# Runs rigwatch's whole test suite on a fresh Debian machine: installs what the tests need
# (Debian's Prometheus, Alertmanager, node_exporter, docker-compose, docker.io and debootstrap
# for the compose test, VictoriaMetrics, nginx, mtail and openssl for the push centre, and a C
# compiler; the Python packages in .venv), builds the simulated
# NVML library, lints, then runs pytest.
# Extra arguments go to pytest (after the worker options, so `-n 0` there wins).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in prometheus:prometheus promtool:prometheus amtool:prometheus-alertmanager \
    prometheus-alertmanager:prometheus-alertmanager \
    prometheus-node-exporter:prometheus-node-exporter docker-compose:docker-compose \
    dockerd:docker.io debootstrap:debootstrap \
    cc:gcc make:make sqlite3:sqlite3 vmagent:victoria-metrics \
    nginx:nginx-light mtail:mtail openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need+=(python3-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "tests/run.sh: installing Debian packages: ${need[*]}"
  # Debian starts a package's service as it installs it (Prometheus on :9090, nginx on :80,
  # dockerd): the tests start their own on free ports, so none is started on this machine.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    own_policy=1
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
  if [ -n "$own_policy" ]; then
    $sudo rm -f "$policy"
    trap - EXIT
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

make -s -C tests/fake_nvml

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Files run in parallel pytest-xdist workers, longest first (tests/conftest.py says how): most
# tests wait on real servers, so three workers overlap them even on two cores.
# RIGWATCH_TEST_WORKERS sets another count (0 runs everything in this process).
exec .venv/bin/python -m pytest -n "${RIGWATCH_TEST_WORKERS:-3}" --dist loadfile \
  --no-loadscope-reorder "$@"
