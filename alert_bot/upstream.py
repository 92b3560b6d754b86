"""Clients for the two services the bot reads from: Prometheus's HTTP API (queries, ranges)
and Alertmanager's v2 API (alerts, silences)."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

import requests


class UpstreamError(RuntimeError):
    """Prometheus or Alertmanager could not answer; the message is safe to show in the chat."""


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class PrometheusClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _get(self, path: str, params: dict, timeout: float | None = None) -> Any:
        try:
            response = self.session.get(
                self.base_url + path, params=params, timeout=timeout or self.timeout
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"Prometheus unreachable ({type(exc).__name__})") from None
        if response.status_code in (401, 403):
            # A Prometheus behind --web.config.file: the login rides in PROMETHEUS_URL
            # (http://user:password@host:9090); never repeat the URL, it holds the password.
            raise UpstreamError(
                f"Prometheus refused the bot's login (HTTP {response.status_code}): "
                "check the user and password in PROMETHEUS_URL"
            )
        try:
            body = response.json()
        except ValueError:
            raise UpstreamError(f"Prometheus answered HTTP {response.status_code}") from None
        if body.get("status") != "success":
            raise UpstreamError(f"Prometheus: {body.get('error', 'query failed')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None, timeout: float | None = None) -> list[dict]:
        """Instant vector: [{"metric": {...}, "value": float}] (now, or at a moment)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", params, timeout)
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        if data.get("resultType") != "vector":
            raise UpstreamError("Prometheus: expected an instant vector")
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def samples(self, expr: str, at: float | None = None) -> list[dict]:
        """The raw samples of a range selector (``metric{...}[5m]``) with their timestamps:
        [{"metric": {...}, "values": [(t, v), ...]}]."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", params)
        if data.get("resultType") != "matrix":
            raise UpstreamError("Prometheus: expected a range vector")
        return [
            {"metric": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]}
            for r in data["result"]
        ]

    def query_range(
        self, expr: str, start: float, end: float, step: float, timeout: float | None = None
    ) -> list[dict]:
        """Range matrix: [{"metric": {...}, "values": [(t, v), ...]}]."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
            timeout,
        )
        if data.get("resultType") != "matrix":
            raise UpstreamError("Prometheus: expected a range vector")
        return [
            {"metric": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]}
            for r in data["result"]
        ]


class AlertmanagerClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"Alertmanager unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            detail = response.text.strip()[:200]
            raise UpstreamError(f"Alertmanager answered HTTP {response.status_code}: {detail}")
        return response

    def alerts(self, silenced: bool = False) -> list[dict]:
        """Active alerts that are not inhibited; silenced ones too when asked (their
        ``status.silencedBy`` names the silences)."""
        response = self._request(
            "GET",
            "/api/v2/alerts",
            params={
                "active": "true",
                "silenced": "true" if silenced else "false",
                "inhibited": "false",
            },
        )
        return response.json()

    def silence(self, silence_id: str) -> dict:
        """One silence by id (whatever its state)."""
        path = "/api/v2/silence/" + urllib.parse.quote(silence_id, safe="")
        body = self._request("GET", path).json()
        if not isinstance(body, dict):
            raise UpstreamError("Alertmanager answered something that is not a silence")
        return body

    def silences(self) -> list[dict]:
        """Silences in effect now."""
        return [
            s
            for s in self._request("GET", "/api/v2/silences").json()
            if s["status"]["state"] == "active"
        ]

    def create_silence(
        self, matchers: list[dict], seconds: float, now: float, created_by: str, comment: str
    ) -> str:
        body = {
            "matchers": matchers,
            "startsAt": _utc(now),
            "endsAt": _utc(now + seconds),
            "createdBy": created_by,
            "comment": comment,
        }
        return self._request("POST", "/api/v2/silences", json=body).json()["silenceID"]

    def expire_silence(self, silence_id: str) -> None:
        self._request("DELETE", "/api/v2/silence/" + urllib.parse.quote(silence_id, safe=""))
