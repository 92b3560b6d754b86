# rigwatch push centre: the public door's image for docker-compose.push.yml. Debian's nginx,
# mtail and logrotate, the same packages and versions as the centre without Docker
# (docs/push.md), so one configuration (nginx-rigwatch-push.conf, rigwatch-push-door.mtail)
# serves both. Three services run it: push-door (nginx), push-door-counter (mtail) and
# push-door-logrotate; the configurations are mounted, not copied, so an edit needs no rebuild.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light mtail logrotate \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    # Only the door's server: no welcome page on port 80.
    && rm -f /etc/nginx/sites-enabled/default \
    # The access log exists before nginx or mtail start: mtail follows a file it found at its
    # start from the end, and the log volume starts as a copy of this directory.
    && touch /var/log/nginx/rigwatch-push.log \
    && chmod 0644 /var/log/nginx/rigwatch-push.log
# logrotate reads a configuration only when root owns it, so it is copied, not mounted.
COPY push-door.logrotate /etc/logrotate.d/rigwatch-push-door
