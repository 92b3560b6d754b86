"""The Alertmanager API v2 client: active alerts, silences, creating and expiring a silence."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import requests

from alert_bot.i18n import N_
from alert_bot.upstream.fetch import Outage, UpstreamError, fetch, json_or_none, unusable, utc_text


def _text_map(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        return MappingProxyType({})
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


@dataclass(frozen=True)
class ActiveAlert:
    """One alert as Alertmanager's API lists it (/api/v2/alerts), with the fields the chat
    shows named."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    silenced_by: tuple[str, ...] = ()
    silenced_until: str = ""  # the latest end of its silences, when the chat looked them up

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @classmethod
    def from_api(cls, item: dict) -> ActiveAlert:
        status = item.get("status")
        silenced_by = status.get("silencedBy") if isinstance(status, dict) else None
        return cls(
            labels=_text_map(item.get("labels")),
            annotations=_text_map(item.get("annotations")),
            silenced_by=tuple(str(s) for s in silenced_by) if isinstance(silenced_by, list) else (),
        )


class AlertmanagerClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.outage = Outage()

    def _request(self, method: str, path: str, **kwargs) -> Any:
        """The answer's JSON (None when there is no JSON body)."""
        status, raw = fetch(
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
        return json_or_none(raw)

    def _list(self, path: str, **kwargs) -> list[dict]:
        body = self._request("GET", path, **kwargs)
        if not isinstance(body, list) or not all(
            isinstance(item, dict) and isinstance(item.get("labels", {}), dict) for item in body
        ):
            raise unusable("Alertmanager")
        return body

    def alerts(self, silenced: bool = False) -> list[ActiveAlert]:
        """Active alerts that are not inhibited; silenced ones too when asked (their
        silenced_by names the silences)."""
        listed = self._list(
            "/api/v2/alerts",
            params={
                "active": "true",
                "silenced": "true" if silenced else "false",
                "inhibited": "false",
            },
        )
        return [ActiveAlert.from_api(item) for item in listed]

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
            "startsAt": utc_text(now),
            "endsAt": utc_text(now + seconds),
            "createdBy": created_by,
            "comment": comment,
        }
        answer = self._request("POST", "/api/v2/silences", json=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("silenceID"), str):
            raise unusable("Alertmanager")
        return answer["silenceID"]

    def expire_silence(self, silence_id: str) -> None:
        self._request("DELETE", "/api/v2/silence/" + urllib.parse.quote(silence_id, safe=""))
