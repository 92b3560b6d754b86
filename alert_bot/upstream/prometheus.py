"""Clients for the two services the bot reads from: Prometheus's HTTP API (queries, ranges)
and Alertmanager's v2 API (alerts, silences)."""

from __future__ import annotations

import re
from typing import Any

import requests
import yaml

from alert_bot.i18n import N_
from alert_bot.upstream.fetch import Outage, UpstreamError, fetch, json_or_none, unusable

# Prometheus's default and the shipped prometheus.yml's scrape interval.
DEFAULT_SCRAPE_INTERVAL_S = 15.0
_PROMETHEUS_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}


def _seconds(text: Any) -> float | None:
    """Seconds of a Prometheus duration ("15s", "1m30s"); None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    parts = _PROMETHEUS_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * _DURATION_SECONDS[u] for n, u in parts)


def _series(data: Any, kind: str) -> list[dict]:
    if not isinstance(data, dict) or data.get("resultType") != kind:
        raise unusable("Prometheus")
    result = data.get("result")
    if not isinstance(result, list) or not all(
        isinstance(r, dict) and isinstance(r.get("metric"), dict) for r in result
    ):
        raise unusable("Prometheus")
    return result


_VMAUTH_UNKNOWN_LOGIN = b"cannot find the provided auth token"


class PrometheusClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.outage = Outage()

    def _get(self, path: str, params: dict, timeout: float | None = None) -> Any:
        status, raw = fetch(
            self.session,
            self.outage,
            "Prometheus",
            "GET",
            self.base_url + path,
            timeout or self.timeout,
            params=params,
        )
        # vmauth 1.79 (the push centre's door) answers a login it does not know with 400.
        if status in (401, 403) or (status == 400 and _VMAUTH_UNKNOWN_LOGIN in raw):
            # A Prometheus behind --web.config.file or vmauth: the login rides in PROMETHEUS_URL
            # (http://user:password@host:9090); never repeat the URL, it holds the password.
            raise UpstreamError(
                N_(
                    "Prometheus refused the bot's login (HTTP {status}): "
                    "check the user and password in PROMETHEUS_URL"
                ),
                status=status,
            )
        body = json_or_none(raw)
        if not isinstance(body, dict):
            if 200 <= status < 300:
                raise unusable("Prometheus")
            raise UpstreamError(N_("Prometheus answered HTTP {status}"), status=status)
        if body.get("status") != "success":
            raise UpstreamError(N_("Prometheus: {error}"), error=str(body.get("error", "?"))[:200])
        return body.get("data")

    def query(self, expr: str, at: float | None = None, timeout: float | None = None) -> list[dict]:
        """Instant vector: [{"metric": {...}, "value": float}] (now, or at a moment)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", params, timeout)
        try:
            if isinstance(data, dict) and data.get("resultType") == "scalar":
                return [{"metric": {}, "value": float(data["result"][1])}]
            return [
                {"metric": r["metric"], "value": float(r["value"][1])}
                for r in _series(data, "vector")
            ]
        except (KeyError, IndexError, TypeError, ValueError):
            raise unusable("Prometheus") from None

    def _matrix(self, data: Any) -> list[dict]:
        try:
            return [
                {"metric": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]}
                for r in _series(data, "matrix")
            ]
        except (KeyError, IndexError, TypeError, ValueError):
            raise unusable("Prometheus") from None

    def scrape_intervals(self) -> tuple[float, dict[str, float]]:
        """(the global scrape interval, {job: its own}) in seconds from Prometheus's loaded
        configuration; the shipped 15 s globally where it cannot say (a store without that
        endpoint, such as VictoriaMetrics, or a push centre's rigs in no job of its own)."""
        try:
            data = self._get("/api/v1/status/config", {})
            loaded = yaml.safe_load(data["yaml"]) if isinstance(data, dict) else None
        except (UpstreamError, KeyError, TypeError, yaml.YAMLError):
            return DEFAULT_SCRAPE_INTERVAL_S, {}
        if not isinstance(loaded, dict):
            return DEFAULT_SCRAPE_INTERVAL_S, {}
        overall = _seconds((loaded.get("global") or {}).get("scrape_interval"))
        overall = overall or DEFAULT_SCRAPE_INTERVAL_S
        jobs = {}
        for job in loaded.get("scrape_configs") or []:
            if isinstance(job, dict) and job.get("job_name"):
                jobs[str(job["job_name"])] = _seconds(job.get("scrape_interval")) or overall
        return overall, jobs

    def samples(self, expr: str, at: float | None = None) -> list[dict]:
        """The raw samples of a range selector (``metric{...}[5m]``) with their timestamps:
        [{"metric": {...}, "values": [(t, v), ...]}]."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        return self._matrix(self._get("/api/v1/query", params))

    def query_range(
        self, expr: str, start: float, end: float, step: float, timeout: float | None = None
    ) -> list[dict]:
        """Range matrix: [{"metric": {...}, "values": [(t, v), ...]}]."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
            timeout,
        )
        return self._matrix(data)


def quote(value: str) -> str:
    """A label value inside a PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
