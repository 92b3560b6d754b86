"""Clients for the two services the bot reads from: Prometheus's HTTP API (queries, ranges)
and Alertmanager's v2 API (alerts, silences)."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.parse
from typing import Any

import requests
import yaml

from alert_bot.i18n import N_, _

# Upstream answers are read into memory whole; a bigger one is refused before it grows the
# bot (a /graph range of 8 cards over 7 days is well under 1 MiB).
MAX_ANSWER_BYTES = 8 << 20
CHUNK_BYTES = 64 << 10
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


class UpstreamError(RuntimeError):
    """Prometheus or Alertmanager could not answer. str() is the English log line; text() is
    the line for the chat, in the bot's language. ``since`` is when the service was first
    found unreachable in this outage (None when it answered, only not usefully)."""

    def __init__(self, message: str, since: float | None = None, **fields: Any):
        super().__init__(message.format(**fields))
        self.message = message
        self.fields = fields
        self.since = since

    def text(self, moment: Any = None) -> str:
        """The chat's line; moment(seconds) formats the outage's start in local time."""
        line = _(self.message).format(**self.fields)
        if self.since is not None and moment is not None:
            line = _("{problem} since {time}: I cannot tell right now.").format(
                problem=line, time=moment(self.since)
            )
        return line


def _read_capped(response: requests.Response, service: str, deadline: float) -> bytes:
    """The body, refused past MAX_ANSWER_BYTES or past the deadline (a total one: an answer
    trickling a byte at a time is cut off, not kept alive by each byte)."""
    body = bytearray()
    try:
        while True:
            if time.monotonic() > deadline:
                raise UpstreamError(N_("{service} answered too slowly"), service=service)
            chunk = response.raw.read1(CHUNK_BYTES)  # what has arrived, not a full chunk
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise UpstreamError(
                    N_("{service} answered more than {size} MiB"),
                    service=service,
                    size=MAX_ANSWER_BYTES >> 20,
                )
    except requests.RequestException as exc:
        raise UpstreamError(
            N_("{service} unreachable ({error})"), service=service, error=type(exc).__name__
        ) from None
    except OSError as exc:  # urllib3's timeouts and resets while reading the body
        raise UpstreamError(
            N_("{service} unreachable ({error})"), service=service, error=type(exc).__name__
        ) from None
    finally:
        response.close()


class _Outage:
    """When a service was first found unreachable, until it answers again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None

    def failed(self) -> float:
        with self._lock:
            if self.since is None:
                self.since = time.time()
            return self.since

    def answered(self) -> None:
        with self._lock:
            self.since = None


def _fetch(
    session: requests.Session,
    outage: _Outage,
    service: str,
    method: str,
    url: str,
    timeout: float,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """(status, body) of one request that ends within timeout seconds in all."""
    deadline = time.monotonic() + timeout
    # Uncompressed, so the size cap counts what is held in memory (no gzip bomb).
    headers = {"Accept-Encoding": "identity"}
    try:
        response = session.request(
            method, url, timeout=timeout, stream=True, headers=headers, **kwargs
        )
    except requests.RequestException as exc:
        raise UpstreamError(
            N_("{service} unreachable ({error})"),
            outage.failed(),
            service=service,
            error=type(exc).__name__,
        ) from None
    try:
        body = _read_capped(response, service, deadline)
    except UpstreamError as exc:
        if "unreachable" in exc.message:
            exc.since = outage.failed()
        raise
    outage.answered()
    return response.status_code, body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def unusable(service: str) -> UpstreamError:
    return UpstreamError(N_("{service} gave an answer the bot cannot use"), service=service)


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat().replace("+00:00", "Z")


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
        self.outage = _Outage()

    def _get(self, path: str, params: dict, timeout: float | None = None) -> Any:
        status, raw = _fetch(
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
        body = _json(raw)
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


class AlertmanagerClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.outage = _Outage()

    def _request(self, method: str, path: str, **kwargs) -> Any:
        """The answer's JSON (None when there is no JSON body)."""
        status, raw = _fetch(
            self.session,
            self.outage,
            "Alertmanager",
            method,
            self.base_url + path,
            self.timeout,
            **kwargs,
        )
        if status >= 400:
            detail = raw[:200].decode("utf-8", "replace").strip()
            raise UpstreamError(
                N_("Alertmanager answered HTTP {status}: {detail}"), status=status, detail=detail
            )
        return _json(raw)

    def _list(self, path: str, **kwargs) -> list[dict]:
        body = self._request("GET", path, **kwargs)
        if not isinstance(body, list) or not all(
            isinstance(item, dict) and isinstance(item.get("labels", {}), dict) for item in body
        ):
            raise unusable("Alertmanager")
        return body

    def alerts(self, silenced: bool = False) -> list[dict]:
        """Active alerts that are not inhibited; silenced ones too when asked (their
        ``status.silencedBy`` names the silences)."""
        return self._list(
            "/api/v2/alerts",
            params={
                "active": "true",
                "silenced": "true" if silenced else "false",
                "inhibited": "false",
            },
        )

    def silence(self, silence_id: str) -> dict:
        """One silence by id (whatever its state)."""
        path = "/api/v2/silence/" + urllib.parse.quote(silence_id, safe="")
        body = self._request("GET", path)
        if not isinstance(body, dict):
            raise unusable("Alertmanager")
        return body

    def silences(self) -> list[dict]:
        """Silences in effect now."""
        try:
            return [s for s in self._list("/api/v2/silences") if s["status"]["state"] == "active"]
        except (KeyError, TypeError):
            raise unusable("Alertmanager") from None

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
        answer = self._request("POST", "/api/v2/silences", json=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("silenceID"), str):
            raise unusable("Alertmanager")
        return answer["silenceID"]

    def expire_silence(self, silence_id: str) -> None:
        self._request("DELETE", "/api/v2/silence/" + urllib.parse.quote(silence_id, safe=""))
