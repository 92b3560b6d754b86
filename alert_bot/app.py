"""The composition root: the bot as one object, wired from collaborators that the caller builds
(so tests hand it local servers and a store in a temporary directory): the HTTP server
(alert_bot.web) in front of the intake (alert_bot.alerts.intake), the delivery and chart
workers, the Telegram update loop, the watchdog and the run watch with its reports; started
and stopped together, healthy only while all of them are."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from alert_bot import __version__, i18n
from alert_bot.alerts.current import Beginnings, CurrentValues
from alert_bot.alerts.intake import Intake
from alert_bot.alerts.render import AlertRenderer, LinkSettings
from alert_bot.alerts.watchdog import Watchdog
from alert_bot.chat.updates import UpdateLoop
from alert_bot.config import Config
from alert_bot.delivery import ChartWorker, DeliveryWorker
from alert_bot.reports.schedule import Reports
from alert_bot.runs.price import register_price
from alert_bot.runs.watch import RunWatch
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store, StoreError
from alert_bot.telegram.client import TelegramClient
from alert_bot.telegram.flood import FloodLimiter
from alert_bot.upstream.alertmanager import AlertmanagerClient
from alert_bot.upstream.prometheus import PrometheusClient
from alert_bot.web import bot_server
from rigwatch.logs import logger

log = logger("bot", "app")


class BotApp:
    def __init__(
        self,
        config: Config,
        telegram: TelegramClient,
        prometheus: PrometheusClient,
        alertmanager: AlertmanagerClient,
        store: Store,
        clock: Callable[[], float] = time.time,
        run_updates: bool = True,
    ):
        self.config = config
        self.store = store
        self.clock = clock
        i18n.use(config.language)
        self.metrics = BotMetrics(lambda: store.outbox.queue_stats(clock()))
        register_price(self.metrics.registry, config, clock)
        self.limiter = FloodLimiter(config.rate_limits)
        self.renderer = AlertRenderer(
            LinkSettings(config.grafana_url, config.grafana_dashboard_uid, config.alertmanager_url),
            config.template_source,
            config.zone,
            CurrentValues(prometheus),
            Beginnings(prometheus),
        )
        self.charts = ChartWorker(
            config, store, telegram, self.metrics, self.limiter, prometheus, clock
        )
        self.worker = DeliveryWorker(
            config, store, telegram, self.renderer, self.metrics, self.limiter, self.charts, clock
        )
        self.updates = UpdateLoop(
            config, store, telegram, prometheus, alertmanager, self.metrics, self.limiter, clock
        )
        self.watchdog = Watchdog(
            config, store, self.metrics, self.worker.wake, clock, alertmanager.silences
        )
        self.runs = (
            RunWatch(
                config,
                store,
                self.metrics,
                prometheus,
                self.worker.wake,
                clock,
                Reports(config, store, prometheus).due,
            )
            if config.runs.enabled
            else None
        )
        self.run_updates = run_updates
        self.intake = Intake(config, store, self.metrics, self.watchdog, self.worker.wake, clock)
        self.server = bot_server(self)
        self._server_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.worker.start()
        self.charts.start()
        if self.run_updates:
            self.updates.start()
        self.watchdog.start()
        if self.runs is not None:
            self.runs.start()
        self._server_thread = threading.Thread(
            target=self.server.serve_forever,
            name="http",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._server_thread.start()
        log.info(
            "rigwatch bot %s listening on %s:%s", __version__, self.config.listen_host, self.port
        )

    def stop(self) -> None:
        self.server.close()
        self.watchdog.stop()
        if self.runs is not None:
            self.runs.stop()
        self.updates.stop()
        self.worker.stop()
        self.charts.stop()

    def healthy(self) -> bool:
        try:
            self.store.outbox.queue_stats(self.clock())
            # A deleted or replaced file still reads and writes (through the open descriptor)
            # but loses everything at restart; a failing disk only shows on writes. After a
            # failed write, one small write here tells when the store works again.
            self.store.database.check()
            if self.store.database.write_failed:
                self.store.state.set("health_probe", str(self.clock()))
        except StoreError:
            return False
        # Without the update loop no command or button works: that is unhealthy too.
        return self.worker.alive() and (not self.run_updates or self.updates.alive())
