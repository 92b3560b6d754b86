"""A fake Telegram Bot API server for the alert bot's tests and benchmark: a real HTTP server on
loopback that records every call and behaves like Telegram where it matters to the bot.

It enforces the length limits (text 4096, caption 1024, callback_data 64 bytes), the HTML parse
mode's rules (only Telegram's tags, balanced, `<` `>` `&` escaped; else 400 "can't parse
entities"), flood limits (per chat, per group, overall; else 429 with retry_after), and can be
told to answer 429, 500 or 400, to be down for a while, or that a group became a supergroup.
getUpdates long-polls updates the test injects (messages and button presses).
It remembers the messages it accepted: replies (reply_parameters or reply_to_message_id) must
name one of them in the same chat, edits (text, caption, buttons) must name one not deleted,
count against the same flood limits as sends, and an edit that changes nothing is refused.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Telegram's tag list, written here again on purpose rather than imported from the bot's
# alert_bot.telegram.html:
# the fake is the oracle the bot is checked against, so it must not share the bot's mistakes.
ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}
ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d{1,7}|#x[0-9a-fA-F]{1,6});")
TAG = re.compile(r'<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:="[^"<>]*")?)*)\s*>')
ENTITY_VALUES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class EntityError(ValueError):
    pass


def parse_telegram_html(text: str) -> str:
    """The visible text of an HTML-mode message, or EntityError like Telegram's 400."""
    out: list[str] = []
    stack: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            match = TAG.match(text, position)
            if not match:
                raise EntityError(f"Unsupported start tag at byte offset {position}")
            closing, name = match.group(1), match.group(2).lower()
            if name not in ALLOWED_TAGS:
                raise EntityError(f'Unsupported start tag "{name}" at byte offset {position}')
            if closing:
                if not stack or stack[-1] != name:
                    raise EntityError(
                        f"Unmatched end tag at byte offset {position}, found </{name}>"
                    )
                stack.pop()
            else:
                stack.append(name)
            position = match.end()
        elif char == "&":
            match = ENTITY.match(text, position)
            if not match:
                raise EntityError(f"Character entity is unsupported at byte offset {position}")
            name = match.group(1)
            if name.startswith("#x"):
                out.append(chr(int(name[2:], 16)))
            elif name.startswith("#"):
                out.append(chr(int(name[1:])))
            else:
                out.append(ENTITY_VALUES[name])
            position = match.end()
        elif char == ">":
            raise EntityError(f"Unexpected > at byte offset {position}")
        else:
            out.append(char)
            position += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict
    files: dict
    at: float
    status: int = 0
    response: dict = field(default_factory=dict)


@dataclass
class Failure:
    method: str | None  # None: any send method
    status: int
    description: str
    retry_after: float | None = None
    count: int = 1
    predicate: Callable[[dict], bool] | None = None
    parameters: dict | None = None
    raw: bytes | None = None  # this exact body instead of Telegram's error JSON


# Answers a real Bot API never gives but a proxy or a self-hosted server can: status 200 with
MALFORMED = {
    "ok_false_no_code": b'{"ok": false, "description": "something went wrong"}',
    "ok_true_no_result": b'{"ok": true}',
    "not_json": b"<html><body>502 Bad Gateway</body></html>",
    "result_not_a_message": b'{"ok": true, "result": 5}',
}


@dataclass
class FloodRules:
    """Telegram-like limits: at most N messages per window."""

    per_chat: tuple[int, float] = (3, 3.0)
    per_group: tuple[int, float] = (20, 60.0)
    overall: tuple[int, float] = (30, 1.0)


DEFAULT_FLOOD = FloodRules()
SEND_METHODS = {"sendMessage", "sendPhoto"}
EDIT_METHODS = {"editMessageText", "editMessageCaption", "editMessageReplyMarkup"}


@dataclass
class Stored:
    """A message the fake accepted, as it reads now."""

    chat_id: int
    thread_id: int | None
    text: str
    parse_mode: str | None
    reply_markup: str | None
    reply_to: int | None
    caption: bool = False
    edits: int = 0


class FakeTelegram:
    def __init__(self, token: str, flood: FloodRules | None = DEFAULT_FLOOD, port: int = 0):
        self.token = token
        self.flood = flood
        self.calls: list[Call] = []  # answered calls, in the order their answers went out
        self.arrived: list[Call] = []  # every call as it arrives, before any delay: in flight
        self.lock = threading.Lock()
        self.updates: list[dict] = []
        self.update_ids = itertools.count(1)
        self.message_ids = itertools.count(1)
        self.updates_changed = threading.Condition(self.lock)
        self.failures: list[Failure] = []
        self.down_until = 0.0
        self.send_delay = 0.0  # seconds each send takes to answer, for mid-request crashes
        self.chat_delays: dict[int, float] = {}  # seconds each send to that chat takes
        self.migrations: dict[int, int] = {}
        self.missing_chats: set[int] = set()  # chats getChat answers "chat not found" for
        self._stamps: dict[tuple, deque] = {}
        self.messages: dict[tuple[int, int], Stored] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.server.daemon_threads = True
        # A client killed mid-request (the crash test) is expected: no traceback on stderr.
        self.server.handle_error = lambda request, address: None
        self.thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeTelegram:
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.updates_changed:
            self.updates_changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what the test controls -------------------------------------------------------------

    def fail(
        self,
        status: int,
        description: str,
        method: str | None = None,
        count: int = 1,
        retry_after: float | None = None,
        predicate=None,
        parameters: dict | None = None,
    ) -> None:
        with self.lock:
            self.failures.append(
                Failure(method, status, description, retry_after, count, predicate, parameters)
            )

    def malform(self, kind: str, count: int = 1, predicate=None, method: str | None = None) -> None:
        """Answer the next `count` matching calls with 200 and a body from MALFORMED."""
        with self.lock:
            self.failures.append(
                Failure(method, 200, kind, None, count, predicate, None, MALFORMED[kind])
            )

    def go_down(self, seconds: float) -> None:
        """Drop every connection without an answer for this long (a network outage)."""
        with self.lock:
            self.down_until = time.monotonic() + seconds

    def migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        with self.lock:
            self.migrations[old_chat_id] = new_chat_id

    def inject_message(
        self,
        chat_id: int,
        text: str,
        user_id: int | None = None,
        chat_type: str | None = None,
        **extra,
    ) -> int:
        user_id = chat_id if user_id is None else user_id
        chat_type = chat_type or ("private" if chat_id > 0 else "supergroup")
        message = {
            "message_id": next(self.message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": f"user{user_id}",
                "username": f"user{user_id}",
            },
            **extra,
        }
        if text:  # service messages (a migration, say) have no text
            message["text"] = text
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        with self.lock:  # the bot may reply to it
            thread_id = extra.get("message_thread_id")
            self.messages[(chat_id, message["message_id"])] = Stored(
                chat_id, thread_id, text, None, None, None
            )
        return self._add_update({"message": message})

    def inject_callback(
        self,
        chat_id: int,
        data: str,
        user_id: int | None = None,
        message_id: int = 1,
        reply_markup: dict | None = None,
    ) -> str:
        user_id = chat_id if user_id is None else user_id
        query_id = f"cb{next(self.update_ids)}"
        self._add_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": {
                        "id": user_id,
                        "is_bot": False,
                        "first_name": f"user{user_id}",
                        "username": f"user{user_id}",
                    },
                    "message": {
                        "message_id": message_id,
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
                        "text": "alert",
                        **({"reply_markup": reply_markup} if reply_markup else {}),
                    },
                    "chat_instance": "1",
                    "data": data,
                }
            }
        )
        return query_id

    def inject_update(self, update: dict) -> int:
        """Any update as written (an odd one a client or Telegram may send); its id is added."""
        return self._add_update(update)

    def _add_update(self, update: dict) -> int:
        with self.updates_changed:
            update_id = next(self.update_ids)
            self.updates.append({"update_id": update_id, **update})
            self.updates_changed.notify_all()
        return update_id

    def delete_message(self, chat_id: int, message_id: int) -> None:
        """The user deleted a message: replies to it and edits of it are refused from now."""
        with self.lock:
            self.messages.pop((chat_id, message_id), None)

    # --- what the test reads ----------------------------------------------------------------

    def calls_to(self, method: str, status: int | None = 200) -> list[Call]:
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method == method and (status is None or c.status == status)
            ]

    def sent(self, chat_id: int | None = None) -> list[Call]:
        """Accepted sendMessage/sendPhoto calls, in order."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method in SEND_METHODS
                and c.status == 200
                and (chat_id is None or int(c.params["chat_id"]) == chat_id)
            ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [c.params.get("text", c.params.get("caption", "")) for c in self.sent(chat_id)]

    def visible_texts(self, chat_id: int | None = None) -> list[str]:
        result = []
        for call in self.sent(chat_id):
            text = call.params.get("text", call.params.get("caption", ""))
            result.append(
                parse_telegram_html(text) if call.params.get("parse_mode") == "HTML" else text
            )
        return result

    def message(self, chat_id: int, message_id: int) -> Stored | None:
        with self.lock:
            return self.messages.get((chat_id, message_id))

    def edits(self, chat_id: int | None = None) -> list[Call]:
        """Accepted editMessageText/editMessageCaption calls, in order."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method in ("editMessageText", "editMessageCaption")
                and c.status == 200
                and (chat_id is None or int(c.params["chat_id"]) == chat_id)
            ]

    def count_status(self, status: int) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.status == status)

    # --- the Bot API ------------------------------------------------------------------------

    def _flood_check(self, chat_id: int, now: float) -> float | None:
        """None when allowed (and counted), else seconds to wait."""
        if self.flood is None:
            return None
        windows = [(("all",), self.flood.overall), (("chat", chat_id), self.flood.per_chat)]
        if chat_id < 0:
            windows.append((("group", chat_id), self.flood.per_group))
        wait = 0.0
        for key, (limit, seconds) in windows:
            stamps = self._stamps.setdefault(key, deque())
            while stamps and stamps[0] <= now - seconds:
                stamps.popleft()
            if len(stamps) >= limit:
                wait = max(wait, stamps[0] + seconds - now)
        if wait > 0:
            return wait
        for key, _ in windows:
            self._stamps[key].append(now)
        return None

    def handle(self, method: str, params: dict, files: dict) -> tuple[int, dict]:
        now = time.monotonic()
        with self.lock:
            for failure in self.failures:
                if failure.count <= 0:
                    continue
                if failure.method is not None and failure.method != method:
                    continue
                if failure.method is None and method not in SEND_METHODS:
                    continue
                if failure.predicate is not None and not failure.predicate(params):
                    continue
                failure.count -= 1
                if failure.raw is not None:
                    return failure.status, failure.raw  # type: ignore[return-value]
                body = {
                    "ok": False,
                    "error_code": failure.status,
                    "description": failure.description,
                }
                parameters = dict(failure.parameters or {})
                if failure.retry_after is not None:
                    parameters["retry_after"] = failure.retry_after
                if parameters:
                    body["parameters"] = parameters
                return failure.status, body
        if method == "getUpdates":
            return self._get_updates(params)
        if method in SEND_METHODS:
            return self._send(method, params, files, now)
        if method == "answerCallbackQuery":
            if len(params.get("text", "")) > 200:
                return _bad("Bad Request: text is too long")
            return 200, {"ok": True, "result": True}
        if method == "setMyCommands":
            # The menu for the users whose app speaks this language (ISO 639-1), or for all.
            if not re.fullmatch(r"([a-z]{2})?", params.get("language_code", "")):
                return _bad("Bad Request: invalid language code specified")
            commands = json.loads(params.get("commands", "[]"))
            for command in commands:
                if (
                    not re.fullmatch(r"[a-z0-9_]{1,32}", command["command"])
                    or not 1 <= len(command["description"]) <= 256
                ):
                    return _bad("Bad Request: BOT_COMMAND_INVALID")
            return 200, {"ok": True, "result": True}
        if method in EDIT_METHODS:
            return self._edit(method, params, now)
        if method == "getChat":
            chat_id = int(params.get("chat_id", 0))
            if chat_id in self.missing_chats:
                return _bad("Bad Request: chat not found")
            kind = "private" if chat_id > 0 else "supergroup"
            return 200, {"ok": True, "result": {"id": chat_id, "type": kind}}
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "rigwatch"}}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}

    def _check_text(
        self, params: dict, key: str, limit: int, required: bool = True
    ) -> tuple[int, dict] | None:
        text = params.get(key, "")
        visible = text
        if params.get("parse_mode") == "HTML":
            try:
                visible = parse_telegram_html(text)
            except EntityError as exc:
                return _bad(f"Bad Request: can't parse entities: {exc}")
        elif params.get("parse_mode"):
            return _bad("Bad Request: unsupported parse_mode in this fake")
        if required and not visible.strip():
            return _bad("Bad Request: message text is empty")
        if utf16_len(visible) > limit:
            return _bad(
                "Bad Request: message is too long"
                if key == "text"
                else "Bad Request: message caption is too long"
            )
        return None

    def _flood_refusal(self, chat_id: int, now: float) -> tuple[int, dict] | None:
        wait = self._flood_check(chat_id, now)
        if wait is None:
            return None
        retry = max(1, int(wait + 0.999))
        return 429, {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry}",
            "parameters": {"retry_after": retry},
        }

    def _edit(self, method: str, params: dict, now: float) -> tuple[int, dict]:
        try:
            chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        except (KeyError, ValueError):
            return _bad("Bad Request: message to edit not found")
        if method == "editMessageText":
            error = self._check_text(params, "text", 4096)
        elif method == "editMessageCaption":
            error = self._check_text(params, "caption", 1024, required=False)
        else:
            error = None
        if error:
            return error
        with self.lock:
            stored = self.messages.get((chat_id, message_id))
            if stored is None:
                # Deleted, or never one of ours: Telegram cannot tell the two apart either.
                if method == "editMessageReplyMarkup":
                    return 200, {"ok": True, "result": True}  # buttons under a user message
                return _bad("Bad Request: message to edit not found")
            if method == "editMessageText" and stored.caption:
                return _bad("Bad Request: there is no text in the message to edit")
            if method == "editMessageCaption" and not stored.caption:
                return _bad("Bad Request: there is no caption in the message to edit")
            markup = params.get("reply_markup")
            text = params.get("caption" if stored.caption else "text", stored.text)
            if method == "editMessageReplyMarkup":
                text = stored.text
            parse_mode = params.get("parse_mode") if method != "editMessageReplyMarkup" else None
            unchanged = text == stored.text and markup == stored.reply_markup
            if method != "editMessageReplyMarkup":
                unchanged = unchanged and parse_mode == stored.parse_mode
            if unchanged:
                return _bad(
                    "Bad Request: message is not modified: specified new message content and"
                    " reply markup are exactly the same as a current content and reply markup"
                    " of the message"
                )
            refusal = self._flood_refusal(chat_id, now)
            if refusal is not None:
                return refusal
            stored.text, stored.reply_markup = text, markup
            if method != "editMessageReplyMarkup":
                stored.parse_mode = parse_mode
            stored.edits += 1
        return 200, {
            "ok": True,
            "result": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
                "text": text,
            },
        }

    def _reply_target(self, chat_id: int, params: dict) -> tuple[int | None, bool]:
        """(the message replied to, whether to send anyway when it is gone)."""
        if params.get("reply_parameters"):
            reply = json.loads(params["reply_parameters"])
            target = reply.get("chat_id", chat_id)
            if int(target) != chat_id:
                return -1, False  # replies across chats are not something the bot does
            return int(reply["message_id"]), bool(reply.get("allow_sending_without_reply"))
        if params.get("reply_to_message_id"):
            allow = params.get("allow_sending_without_reply") in ("true", "True", "1")
            return int(params["reply_to_message_id"]), allow
        return None, False

    def _send(self, method: str, params: dict, files: dict, now: float) -> tuple[int, dict]:
        try:
            chat_id = int(params["chat_id"])
        except (KeyError, ValueError):
            return _bad("Bad Request: chat not found")
        if chat_id in self.missing_chats:
            return _bad("Bad Request: chat not found")
        with self.lock:
            new_id = self.migrations.get(chat_id)
        if new_id is not None:
            return 400, {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": new_id},
            }
        if method == "sendMessage":
            error = self._check_text(params, "text", 4096)
        else:
            if "photo" not in files or not files["photo"].startswith(b"\x89PNG"):
                return _bad("Bad Request: there is no photo in the request")
            error = self._check_text(params, "caption", 1024, required=False)
        if error:
            return error
        if "reply_markup" in params:
            markup = json.loads(params["reply_markup"])
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    data = button.get("callback_data")
                    if data is not None and not 1 <= len(data.encode()) <= 64:
                        return _bad("Bad Request: BUTTON_DATA_INVALID")
        reply_to, send_anyway = self._reply_target(chat_id, params)
        thread_id = int(params["message_thread_id"]) if params.get("message_thread_id") else None
        with self.lock:
            if reply_to is not None:
                target = self.messages.get((chat_id, reply_to))
                if target is None and not send_anyway:
                    return _bad("Bad Request: message to reply not found")
                if target is None:
                    reply_to = None
            refusal = self._flood_refusal(chat_id, now)
            if refusal is not None:
                return refusal
            message_id = next(self.message_ids)
            caption = method != "sendMessage"
            self.messages[(chat_id, message_id)] = Stored(
                chat_id,
                thread_id,
                params.get("caption" if caption else "text", ""),
                params.get("parse_mode"),
                params.get("reply_markup"),
                reply_to,
                caption,
            )
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
        }
        if reply_to is not None:
            result["reply_to_message"] = {
                "message_id": reply_to,
                "date": int(time.time()),
                "chat": result["chat"],
            }
        if method == "sendMessage":
            result["text"] = params.get("text", "")
        else:
            result["photo"] = [
                {
                    "file_id": f"photo{message_id}",
                    "file_unique_id": f"u{message_id}",
                    "width": 800,
                    "height": 400,
                }
            ]
        return 200, {"ok": True, "result": result}

    def _get_updates(self, params: dict) -> tuple[int, dict]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 5.0)
        deadline = time.monotonic() + timeout
        with self.updates_changed:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and time.monotonic() < deadline and self.thread is not None:
                self.updates_changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            return 200, {"ok": True, "result": list(self.updates)}

    # --- HTTP plumbing ----------------------------------------------------------------------

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                if time.monotonic() < fake.down_until:
                    self.close_connection = True
                    with fake.lock:
                        fake.calls.append(Call("(down)", {}, {}, time.time(), 0))
                    return  # no answer at all: the client sees the connection drop
                split = urllib.parse.urlsplit(self.path)
                match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", split.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not match:
                    self._answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                    return
                token, method = match.groups()
                params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
                files: dict[str, bytes] = {}
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("multipart/form-data"):
                    message = BytesParser(policy=HTTP).parsebytes(
                        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
                    )
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        payload = part.get_payload(decode=True) or b""
                        if part.get_filename():
                            files[name] = payload
                        else:
                            params[name] = payload.decode()
                elif content_type.startswith("application/json") and body:
                    params.update(
                        {
                            k: v if isinstance(v, str) else json.dumps(v)
                            for k, v in json.loads(body).items()
                        }
                    )
                elif body:
                    params.update(
                        dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
                    )
                call = Call(method, params, files, time.time())
                with fake.lock:
                    fake.arrived.append(call)
                if method in SEND_METHODS and fake.send_delay:
                    time.sleep(fake.send_delay)
                with contextlib.suppress(ValueError):
                    delay = fake.chat_delays.get(int(params.get("chat_id", 0)), 0.0)
                    if method in SEND_METHODS and delay:
                        time.sleep(delay)
                if token != fake.token:
                    status, response = (
                        401,
                        {"ok": False, "error_code": 401, "description": "Unauthorized"},
                    )
                else:
                    status, response = fake.handle(method, params, files)
                if isinstance(response, bytes):  # a malformed answer: recorded as status -1
                    call.status, call.response = -1, {"raw": response.decode()}
                else:
                    call.status, call.response = status, response
                with fake.lock:
                    fake.calls.append(call)
                self._answer(status, response)

            def _answer(self, status: int, body: dict | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

        return Handler


def _bad(description: str) -> tuple[int, dict]:
    return 400, {"ok": False, "error_code": 400, "description": description}
