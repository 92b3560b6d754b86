"""The language setting: the catalogs against the code (every message translated, plural forms
right), the duration and time words, and the bot speaking Russian end to end: an alert firing
and resolving, the command menu, and every command against a real Prometheus and Alertmanager
(times in the owner's time zone)."""

from __future__ import annotations

import gettext
import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from alert_bot import i18n
from alert_bot.alerts import render
from alert_bot.chat import first_run
from alert_bot.config import ConfigError, load_config, load_first_run_config
from alert_bot.i18n import format_duration, translations
from alert_bot.telegram.types import Message, Sender
from alert_bot.upstream import units
from tests.alert_bot import botkit
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.servers import have_binary
from tests.support import REPO, http_get, wait_until

PO = REPO / "alert_bot/locale/ru/LC_MESSAGES/rigwatch-bot.po"
POT = REPO / "alert_bot/locale/rigwatch-bot.pot"
RUSSIAN = {"language": "ru", "timezone": "Europe/Moscow"}  # MSK: UTC+3 all year
CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    """The language is the process's: the tests after these speak English again."""
    yield
    i18n.use("en")


def _ids(messages) -> set:
    return {m.id if isinstance(m.id, str) else tuple(m.id) for m in messages if m.id}


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w*)\}", text))


# --- the catalogs ---------------------------------------------------------------------------


def test_every_message_of_the_code_is_in_the_catalog_and_translated():
    extracted = {
        (message if isinstance(message, str) else tuple(message))
        for _, _, message, _, _ in extract_from_dir(str(REPO / "alert_bot"))
    }
    assert len(extracted) > 150
    with POT.open("rb") as source:
        assert _ids(read_po(source)) == extracted, "regenerate the .pot (docs/alert-bot.md)"
    with PO.open("rb") as source:
        catalog = read_po(source)
    assert _ids(catalog) == extracted
    assert catalog.num_plurals == 3
    for message in catalog:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        singular = message.id if isinstance(message.id, str) else message.id[0]
        forms = [message.string] if isinstance(message.string, str) else list(message.string)
        assert len(forms) == (1 if isinstance(message.id, str) else 3), message.id
        for form in forms:
            assert form.strip(), message.id
            assert _placeholders(form) == _placeholders(singular), (message.id, form)


def test_no_message_hides_in_an_f_string_where_extraction_cannot_see_it():
    hidden = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "alert_bot").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\{\s*(_|N_|ngettext)\(", line)
    ]
    assert hidden == []


@pytest.mark.parametrize(
    ("count", "russian", "english"),
    [
        (1, "1 алерт", "1 alert fired"),
        (2, "2 алерта", "2 alerts fired"),
        (5, "5 алертов", "5 alerts fired"),
        (11, "11 алертов", "11 alerts fired"),
        (21, "21 алерт", "21 alerts fired"),  # English has no rule for 21
        (22, "22 алерта", "22 alerts fired"),
        (25, "25 алертов", "25 alerts fired"),
    ],
)
def test_plural_forms(count, russian, english):
    ru, en = translations("ru"), translations("en")
    singular, plural = "{count} alert fired", "{count} alerts fired"
    assert ru.ngettext(singular, plural, count).format(count=count) == russian
    assert en.ngettext(singular, plural, count).format(count=count) == english
    firing = ru.ngettext("<b>{count} firing alert</b>", "<b>{count} firing alerts</b>", count)
    assert firing.format(count=count).split(" ", 1)[1].startswith("активн")


def test_the_installed_package_carries_a_compiled_catalog(tmp_path, monkeypatch):
    """setup.py's build step compiles the .po into the built package (what pip installs and the
    bot image holds); it reads the same as the .po compiled at start-up."""
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    compiled = tmp_path / "alert_bot/locale/ru/LC_MESSAGES/rigwatch-bot.mo"
    with compiled.open("rb") as source:
        installed = gettext.GNUTranslations(source)
    assert installed.gettext("RESOLVED") == translations("ru").gettext("RESOLVED") == "ОТБОЙ"
    assert installed.ngettext("{count} alert fired", "{count} alerts fired", 5) == "{count} алертов"
    assert not list(PO.parent.glob("*.mo")), ".mo files are build output, not in the checkout"
    # Installed without Babel (the image), its .po unpacked after its .mo: the .mo serves.
    (tmp_path / "alert_bot/locale/ru/LC_MESSAGES/rigwatch-bot.po").touch()
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path / "alert_bot/locale")
    monkeypatch.setitem(sys.modules, "babel.messages.mofile", None)
    i18n.translations.cache_clear()
    try:
        assert i18n.translations("ru").gettext("FIRING") == "ТРЕВОГА"
    finally:
        i18n.translations.cache_clear()


# --- the rules' Russian annotations ---------------------------------------------------------


def _alerting_rules() -> list[dict]:
    return [
        rule
        for path in sorted((REPO / "prometheus/rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_shipped_alert_has_both_annotation_sets():
    rules = _alerting_rules()
    assert len(rules) > 40
    for rule in rules:
        annotations = rule["annotations"]
        for key in ("summary", "description"):
            english, russian = annotations[key], annotations[f"{key}_ru"]
            assert CYRILLIC.search(russian) and not CYRILLIC.search(english), rule["alert"]
            # The same values in both: the labels and queries the English one shows.
            uses = re.compile(r"\$labels\.\w+|\$value|\| query")
            assert set(uses.findall(russian)) == set(uses.findall(english)), (rule["alert"], key)


def test_promtool_checks_the_russian_annotations_too():
    """promtool compares annotations exactly: every firing case spells out the Russian ones."""
    for path in sorted((REPO / "prometheus/tests").glob("*_test.yml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                for expected in check.get("exp_alerts") or []:
                    annotations = expected["exp_annotations"]
                    assert {"summary_ru", "description_ru"} <= set(annotations), check
                    assert CYRILLIC.search(annotations["summary_ru"]), check


def test_the_bot_picks_the_annotations_of_its_language():
    annotations = {"summary": "GPU 0 is hot", "summary_ru": "GPU 0 горячая", "description": "d"}
    assert render.annotation(annotations, "summary") == "GPU 0 is hot"
    i18n.use("ru")
    assert render.annotation(annotations, "summary") == "GPU 0 горячая"
    assert render.annotation(annotations, "description") == "d"  # no Russian one: the rule's own
    assert render.annotation({}, "summary") == ""


def test_without_a_compiled_catalog_or_babel_the_setting_says_what_to_do(monkeypatch):
    """An installed package has its .mo; a checkout without one needs Babel to compile the .po
    (the test extra brings it). Without either, a configuration error says so."""
    monkeypatch.setattr(i18n, "LOCALE_DIR", REPO / "alert_bot/locale")  # a checkout: no .mo
    monkeypatch.setitem(sys.modules, "babel.messages.mofile", None)  # as if not installed
    i18n.translations.cache_clear()
    try:
        with pytest.raises(ConfigError) as caught:
            i18n.translations("ru")
        assert str(caught.value).startswith("language: ")
        assert "rigwatch-bot.mo is missing" in str(caught.value)
        assert "pip install ." in str(caught.value)
    finally:
        i18n.translations.cache_clear()


# --- words shared by the messages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "alerts", "runs", "russian"),
    [
        (40, "40s", "40s", "40с"),
        (300, "5m", "5m 0s", "5м"),
        (270, "4m 30s", "4m 30s", "4м 30с"),
        (720, "12m", "12m 0s", "12м"),
        (7500, "2h 5m", "2h 5m", "2ч 5м"),
        (93784, "1d 2h", "1d 2h 3m", "1д 2ч"),
    ],
)
def test_one_duration_formatter_two_precisions(seconds, alerts, runs, russian):
    assert format_duration(seconds) == alerts
    assert format_duration(seconds, precise=True) == runs
    i18n.use("ru")
    assert format_duration(seconds) == russian


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d12h", 129600),
        ("30м", 1800),
        ("2ч", 7200),
        ("1д", 86400),
        ("1ч30м", 5400),
        ("2Ч", 7200),
        ("90мин", 5400),
        ("1,5ч", 5400),
        ("1.5h", 5400),
    ],
)
def test_durations_as_people_type_them_in_either_language(typed, seconds):
    assert i18n.looks_like_duration(typed)
    assert i18n.parse_typed_duration(typed) == seconds
    i18n.use("ru")
    assert i18n.parse_typed_duration(typed) == seconds


@pytest.mark.parametrize(
    ("typed", "english", "russian"),
    [
        (
            "1h2x",
            "'2x' in '1h2x': unknown unit x; use m, h, d",
            "«2x» в «1h2x»: неизвестная единица x; единицы: м, ч, д",
        ),
        (
            "2",
            "'2' in '2': no unit after the number; use m, h, d",
            "«2» в «2»: после числа нет единицы; единицы: м, ч, д",
        ),
        (
            "1ч30",
            "'30' in '1ч30': no unit after the number; use m, h, d",
            "«30» в «1ч30»: после числа нет единицы; единицы: м, ч, д",
        ),
        (
            "soon",
            "'soon' is not a duration; write it like 30m, 2h or 1d",
            "«soon» — не срок; пишите так: 30м, 2ч или 1д",
        ),
    ],
)
def test_a_wrong_duration_names_its_wrong_part(typed, english, russian):
    for language, expected in (("en", english), ("ru", russian)):
        i18n.use(language)
        with pytest.raises(i18n.DurationError) as caught:
            i18n.parse_typed_duration(typed)
        assert str(caught.value) == expected


def test_numbers_money_windows_and_zones_as_each_language_writes_them():
    moscow = __import__("zoneinfo").ZoneInfo("Europe/Moscow")
    moment = datetime(2026, 11, 22, 10, 0, tzinfo=moscow)
    cases = [
        (lambda: i18n.format_number(1.21, ".2f"), "1.21", "1,21"),
        (lambda: i18n.format_money(0.17, "₽"), "₽0.17", "0,17 ₽"),
        (lambda: i18n.format_money(3.5, "EUR"), "3.50 EUR", "3,50 EUR"),
        (lambda: i18n.format_window(86400), "day", "сутки"),
        (lambda: i18n.format_window(30 * 86400), "30 days", "30 дн."),
        (lambda: i18n.format_window(3600), "1 hour", "1 ч"),
        (lambda: i18n.format_window(5400), "90 minutes", "90 мин"),
        (lambda: i18n.format_time(moment, moscow), "2026-11-22 10:00 MSK", "2026-11-22 10:00 МСК"),
    ]
    for make, english, russian in cases:
        i18n.use("en")
        assert make() == english
        i18n.use("ru")
        assert make() == russian


def test_the_language_setting(tmp_path):
    def config(settings: dict):
        return load_config(botkit.bot_env(tmp_path, botkit.NOWHERE, settings))

    assert config({}).language == "en"
    assert config({"language": "ru"}).language == "ru"
    assert config({"language": " RU "}).language == "ru"
    for wrong in ("de", "", True, "russian"):
        with pytest.raises(ConfigError) as caught:
            config({"language": wrong})
        assert str(caught.value).startswith("language:") and "en, ru" in str(caught.value)


def test_the_first_run_mode_speaks_the_configured_language(tmp_path):
    """Before a chat is configured the bot answers /start; with a YAML file already saying
    `language: ru`, in Russian."""
    env = botkit.bot_env(tmp_path, botkit.NOWHERE, {"language": "ru"})
    del env["TELEGRAM_CHAT_ID"]
    assert load_first_run_config(env).language == "ru"
    del env["ALERT_BOT_CONFIG"]
    assert load_first_run_config(env).language == "en"
    i18n.use("ru")
    start = first_run.answer(Message(-100500, sender=Sender(7), text="/start"))
    assert start == (
        "👋 Это rigwatch. ID этого чата — <code>-100500</code>, ваш — <code>7</code>.\n"
        "Чтобы алерты приходили сюда, впишите <code>TELEGRAM_CHAT_ID=-100500</code> в окружение "
        "бота (.env) рядом с другими настройками и перезапустите бота."
    )
    other = first_run.answer(Message(-100500, text="/status"))
    assert other.startswith("rigwatch ещё не настроен: отправьте сюда /start")


# --- the bot in Russian ---------------------------------------------------------------------


def test_an_alert_fires_and_resolves_in_russian_in_the_owner_time_zone(tmp_path, telegram):
    annotations = {
        "summary_ru": "Карта 0 нагрелась до 91 °C",
        "description_ru": "Проверьте вентиляторы.",
        "description": "Check the fans.",
    }
    firing, resolved = botkit.alert(), botkit.alert(status="resolved")
    for one in (firing, resolved):
        one["annotations"].update(annotations)
    env = botkit.bot_env(tmp_path, telegram.url, RUSSIAN)
    with botkit.running_bot(env) as (app, base):
        assert botkit.post(base, botkit.notification(firing))[0] == 200
        wait_until(lambda: telegram.sent(botkit.CHAT), what="the firing message")
        assert botkit.post(base, botkit.notification(resolved))[0] == 200
        wait_until(lambda: telegram.edits(botkit.CHAT), what="the firing message edited")
        menus = {
            c.params.get("language_code"): json.loads(c.params["commands"])
            for c in telegram.calls_to("setMyCommands")
        }
    first, second = telegram.sent(botkit.CHAT)
    text = parse_telegram_html(first.params["text"])
    lines = text.split("\n")
    assert lines[0] == "🟠 ТРЕВОГА · warning · GpuTooHot"
    assert lines[1] == "🖥 риг rig1 · GPU 0"
    assert lines[2:4] == ["Карта 0 нагрелась до 91 °C", "Проверьте вентиляторы."]
    assert lines[4].startswith("🕒 с 2026-11-22 13:00 МСК (") and lines[4].endswith(" назад)")
    assert lines[5] == "📈 дашборд · 🔕 заглушить в Alertmanager"
    buttons = json.loads(first.params["reply_markup"])["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["🔕 1ч", "🔕 4ч", "🔕 24ч"]
    assert [b["callback_data"][-3:] for b in buttons] == [":1h", ":4h", "24h"]
    text = parse_telegram_html(second.params["text"])
    assert text.split("\n")[:4] == [
        "✅ ОТБОЙ · warning · GpuTooHot",
        "🖥 риг rig1 · GPU 0",
        "Уже не актуально с 2026-11-22 13:12 МСК; было: Карта 0 нагрелась до 91 °C",
        "🕒 длился 12м (с 2026-11-22 13:00 МСК)",
    ]
    (edit,) = telegram.edits(botkit.CHAT)
    edited = parse_telegram_html(edit.params["text"])
    assert edited.startswith("✅ ОТБОЙ · длился 12м\n\n🟠 ТРЕВОГА · warning · GpuTooHot")
    # The menu: the configured language for everyone, and each language for its own users.
    assert set(menus) == {None, "en", "ru"}
    described = {code: {c["command"]: c["description"] for c in m} for code, m in menus.items()}
    assert described[None] == described["ru"] != described["en"]
    assert described["ru"]["status"] == "все риги: карты, хост и активные алерты"
    assert described["en"]["status"] == "every rig: cards, host and firing alerts"
    assert all(CYRILLIC.search(text) for text in described["ru"].values())


needs_services = pytest.mark.skipif(
    not (have_binary("prometheus") and have_binary("prometheus-alertmanager")),
    reason="tests/run.sh installs Debian's prometheus and prometheus-alertmanager",
)


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict]:
    """Exporter (two simulated cards, one hot) → Prometheus; and an Alertmanager."""
    with botkit.two_card_rig(tmp_path_factory.mktemp("language")) as services:
        yield services


def _ask(telegram, chat: int, text: str) -> str:
    before = len(telegram.sent(chat))
    telegram.inject_message(chat, text)
    wait_until(lambda: len(telegram.sent(chat)) > before, timeout=15, what=text)
    call = telegram.sent(chat)[before]
    return parse_telegram_html(call.params.get("text", call.params.get("caption", "")))


def _moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _press(telegram, data: str, message) -> str:
    before = len(telegram.calls_to("answerCallbackQuery"))
    telegram.inject_callback(botkit.CHAT, data, message_id=message.response["result"]["message_id"])
    wait_until(lambda: len(telegram.calls_to("answerCallbackQuery")) > before, what=data)
    return telegram.calls_to("answerCallbackQuery")[before].params["text"]


PRICED = {**RUSSIAN, "energy": {"price_per_kwh": 5.5, "currency": "₽"}}


@needs_services
def test_every_command_in_russian(tmp_path: Path, telegram, services):
    """Every command's answer as a Russian speaker writes it: one word per thing (ЦП, LA), units
    in Russian (Вт, ГиБ), numbers with a decimal comma, money after the amount (0,17 ₽), windows
    as words (за сутки, за 6 ч), МСК, the author in brackets, the bot's own silence comments in
    Russian, buttons in one capitalisation, and no instance beside a rig of the same name."""
    labels = {
        "alertname": "GpuHotRu",
        "rig": "rig1",
        "instance": "rig1",
        "gpu": "0",
        "severity": "critical",
    }
    botkit.alertmanager_api(services, "/api/v2/alerts", [{"labels": labels}], "POST")
    wait_until(
        lambda: botkit.alertmanager_api(services, "/api/v2/alerts"), what="alert in Alertmanager"
    )
    with botkit.running_chat_bot(tmp_path, telegram, services, PRICED):
        answers = {ask: _ask(telegram, botkit.CHAT, ask) for ask in ("/start", "/help", "/nosuch")}
        assert answers["/start"].startswith(
            f"👋 Это rigwatch. ID этого чата — {botkit.CHAT}, ваш — "
        )
        assert "✅ Этому чату бот доступен. Команды — в /help." in answers["/start"]
        assert answers["/help"].startswith("Бот rigwatch\n/start — ID этого чата")
        assert "/gpu — GPU: температура, загрузка, память" in answers["/help"]
        assert answers["/nosuch"] == "Неизвестная команда. Что я умею — в /help."
        refused = _ask(telegram, botkit.STRANGER, "/gpu")
        assert refused.startswith(
            f"Извините, этому чату rigwatch недоступен. Его ID — {botkit.STRANGER}"
        )

        gpu = _ask(telegram, botkit.CHAT, "/gpu")
        assert "GPU 0 · NVIDIA GeForce RTX 4090: 🌡 83 °C" in gpu
        assert "загрузка 10%" in gpu and "память 1,0/24,0 ГиБ" in gpu and "вент. 30%" in gpu
        assert " · 120/450 Вт · " in gpu and " W" not in gpu
        assert "Нет данных от Prometheus по ригу nosuchrig." in _ask(
            telegram, botkit.CHAT, "/gpu nosuchrig"
        )
        cpu = _ask(telegram, botkit.CHAT, "cpu")
        assert cpu.startswith("🖥 rig1: ") and re.search(
            r"^🖥 rig1: (ЦП 🌡 \d+ °C · )?ЦП \d+% · LA \d+,\d\d · ", cpu
        ), cpu
        assert "загрузка" not in cpu and "нагрузка" not in cpu
        assert re.search(r"память \d+% \(\d+,\d/\d+,\d ГиБ\)", cpu) and "диск / " in cpu
        status = _ask(telegram, botkit.CHAT, "/status")
        assert "🖥 rig1" in status and "🔴 GpuHotRu GPU 0" in status and "· LA " in status
        assert re.search(r"⚡ сегодня \d+(,\d+)? кВт·ч ≈ \d+,\d\d ₽", status), status

        listing = _ask(telegram, botkit.CHAT, "/alerts")
        assert listing.startswith("1 активный алерт\n1. 🔴 GpuHotRu · риг rig1 · GPU 0")
        assert "инстанс" not in listing  # the instance is named like the rig
        message = telegram.sent(botkit.CHAT)[-1]
        buttons = json.loads(message.params["reply_markup"])["inline_keyboard"][0]
        assert [b["text"] for b in buttons] == ["#1 🔕 1ч", "#1 🔕 4ч", "#1 🔕 24ч"]
        sent_before = len(telegram.sent(botkit.CHAT))
        assert _press(telegram, buttons[1]["callback_data"], message) == "Заглушено на 4ч."
        wait_until(lambda: len(telegram.sent(botkit.CHAT)) > sent_before, what="confirmation")
        confirmation = parse_telegram_html(telegram.sent(botkit.CHAT)[-1].params["text"])
        assert re.fullmatch(
            r"🔕 user\d+ заглушил\(а\) GpuHotRu риг rig1 · GPU 0 на 4ч "
            r"\(до \d{4}-\d\d-\d\d \d\d:\d\d МСК\)\.",
            confirmation,
        ), confirmation
        silences = _ask(telegram, botkit.CHAT, "/silences")
        assert silences.startswith("1 активная заглушка\n1. "), silences
        assert re.search(
            r" МСК \(user\d+\): заглушено из Telegram на 4ч: GpuHotRu риг rig1 · GPU 0$", silences
        ), silences
        assert "автор" not in silences and "silenced from Telegram" not in silences
        message = telegram.sent(botkit.CHAT)[-1]
        (unsilence,) = json.loads(message.params["reply_markup"])["inline_keyboard"][0]
        assert unsilence["text"] == "#1 🔔 Снять"
        assert _press(telegram, unsilence["callback_data"], message) == "Заглушка снята."
        wait_until(
            lambda: "снял(а) заглушку" in telegram.visible_texts(botkit.CHAT)[-1], what="notice"
        )
        assert _ask(telegram, botkit.CHAT, "/silences") == "Активных заглушек нет."

        assert _ask(telegram, botkit.CHAT, "/graph").startswith(
            "Формат: /graph gpu|cpu|mem|disk [риг]"
        )
        for typed, window in (("6h", "6 ч"), ("6ч", "6 ч"), ("1д", "сутки"), ("30м", "30 мин")):
            assert (
                _ask(telegram, botkit.CHAT, f"/graph gpu rig1 0 {typed}")
                == f"📈 температура GPU на rig1, GPU 0 — за {window}"
            )
        assert (
            _ask(telegram, botkit.CHAT, "/graph gpu rig1 0 1h2x")
            == "«2x» в «1h2x»: неизвестная единица x; единицы: м, ч, д"
        )
        assert _ask(telegram, botkit.CHAT, "/mute").startswith(
            "Заглушённых ригов нет. Формат: /mute"
        )
        assert (
            _ask(telegram, botkit.CHAT, "/mute rig1 30d")
            == "Заглушить можно на срок от 1 мин до 7 дн."
        )
        assert _ask(telegram, botkit.CHAT, "/mute rig1 1ч2ы").startswith(
            "«2ы» в «1ч2ы»: неизвестная единица ы; единицы: м, ч, д\nФормат: /mute"
        )
        muted = _ask(telegram, botkit.CHAT, "/mute rig1 1ч30м меняю райзер")
        assert re.match(
            r"🔇 rig1 заглушён до \d{4}-\d\d-\d\d \d\d:\d\d МСК \(user\d+\): меняю райзер\.\n",
            muted,
        ), muted
        assert "\nПродолжат приходить: AlertBotBacklogGrowing, " in muted
        (silence,) = [
            s
            for s in botkit.alertmanager_api(services, "/api/v2/silences")
            if s["status"]["state"] == "active" and "rigwatch mute" in s["comment"]
        ]
        length = _moment(silence["endsAt"]) - _moment(silence["startsAt"])
        assert 5390 <= length <= 5410  # 1ч30м
        message = telegram.sent(botkit.CHAT)[-1]
        (end,) = json.loads(message.params["reply_markup"])["inline_keyboard"][0]
        assert end["text"] == "🔔 Снять сейчас"
        listed = _ask(telegram, botkit.CHAT, "/silences")
        assert re.search(r"\(user\d+\): заглушка рига rig1 из Telegram: меняю райзер$", listed)
        _ask(telegram, botkit.CHAT, "/mute")
        (listed_end,) = json.loads(telegram.sent(botkit.CHAT)[-1].params["reply_markup"])[
            "inline_keyboard"
        ][0]
        assert listed_end["text"] == "🔔 Снять с rig1"
        assert _press(telegram, end["callback_data"], message) == "Заглушка снята."

        runs = _ask(telegram, botkit.CHAT, "/runs")
        assert runs == "🏃 Сейчас ничего не обучается.\n\n🏁 За 24 ч ничего не завершилось."
        assert (
            _ask(telegram, botkit.CHAT, "/energy 45д")
            == "Энергию можно посчитать за срок от 1 ч до 30 дн."
        )
        energy = _ask(telegram, botkit.CHAT, "/energy")
        assert energy.startswith("⚡ Энергия GPU за сутки (по "), energy
        assert re.search(r"\n  GPU 0: \d+(,\d+)? кВт·ч ≈ \d+,\d\d ₽", energy), energy
        assert "₽0" not in energy and "." not in energy.split("\n", 1)[1]
        week = _ask(telegram, botkit.CHAT, "/energy rig1 7д")
        assert week.startswith("⚡ Энергия GPU за 7 дн. (по "), week
        # Minutes of history: the card-health report says it has nothing to compare yet.
        health = _ask(telegram, botkit.CHAT, "/health rig1")
        assert health.startswith("🩺 Здоровье карт · rig1 · "), health
        assert health.endswith("Пока не с чем сравнить: карте нужны сутки под нагрузкой на этой "
                               "неделе и четыре недели назад."), health  # fmt: skip
        assert telegram.calls_to("sendPhoto")


@needs_services
def test_a_resolved_count_says_its_value_now_in_russian_words(tmp_path: Path, telegram, services):
    """The shipped PCIe replay rule counts errors: its resolved notice, read back from the real
    Prometheus, says "0 ошибок", and the forms follow the number."""
    (rule,) = [r for r in _alerting_rules() if r["alert"] == "GpuPcieReplayErrors"]
    url = "http://prometheus.example:9090/graph?g0.expr=" + urllib.parse.quote(rule["expr"])
    query = urllib.parse.urlencode({"query": 'rigwatch_gpu_pcie_replay_errors_total{gpu="0"}'})
    status, body = http_get(f"{services['prometheus']}/api/v1/query?{query}")
    assert status == 200, body
    (series,) = json.loads(body)["data"]["result"]
    labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "rig", "gpu")}
    resolved = botkit.alert(name="GpuPcieReplayErrors", status="resolved", generator=url, **labels)
    with botkit.running_chat_bot(tmp_path, telegram, services, RUSSIAN) as (_, base):
        before = len(telegram.sent(botkit.CHAT))
        assert botkit.post(base, botkit.notification(resolved))[0] == 200
        wait_until(lambda: len(telegram.sent(botkit.CHAT)) > before, what="the resolved notice")
    notice = telegram.visible_texts(botkit.CHAT)[before]
    assert notice.startswith("✅ ОТБОЙ · warning · GpuPcieReplayErrors"), notice
    assert "Сейчас: 0 ошибок" in notice.splitlines(), notice
    unit = units.unit_of("increase(rigwatch_gpu_pcie_replay_errors_total[10m])")
    assert [render.value_words(unit, n) for n in (1, 3, 11, 21, 1.5)] == [
        "1 ошибка",
        "3 ошибки",
        "11 ошибок",
        "21 ошибка",
        "1,5 ошибки",
    ]
    assert units.unit_of("rigwatch_gpu_power_usage_watts").format(330) == "330 Вт"
    assert units.unit_of("rigwatch_gpu_clock_hertz").axis_label() == "частота (МГц)"
