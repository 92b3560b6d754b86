# rigwatch push centre: the public door's image for docker-compose.push.yml. Debian's nginx,
# mtail and logrotate, the same packages and versions as the centre without Docker
# (docs/push.md), so one configuration (nginx-rigwatch-push.conf, rigwatch-push-door.mtail)
# serves both. Three services run it: push-door (nginx), push-door-counter (mtail) and
# push-door-logrotate. docker-compose.push.yml mounts deploy/centre-push at /etc/rigwatch-door,
# so an edit to the nginx or mtail files takes effect on SIGHUP (nginx) or a restart (mtail),
# without a rebuild; the logrotate file is copied in (below).
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light mtail logrotate \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    # Only the door's server: no welcome page on port 80.
    && rm -f /etc/nginx/sites-enabled/default \
    && printf '%s\n' \
        '# docker-compose.push.yml: deploy/centre-push, mounted as a directory.' \
        'include /etc/rigwatch-door/nginx-rigwatch-push.conf;' \
        'include /etc/rigwatch-door/nginx-compose-vmauth.conf;' \
        > /etc/nginx/conf.d/rigwatch.conf \
    # Each rig keeps a connection open between pushes, and a push holds three more while in
    # flight: Debian's 768 connections a worker would cap a centre at a few hundred rigs.
    && sed -i 's/worker_connections 768;/worker_connections 8192;/' /etc/nginx/nginx.conf \
    && grep -q 'worker_connections 8192;' /etc/nginx/nginx.conf \
    # The access log exists before nginx or mtail start: mtail follows a file it found at its
    # start from the end, and the log volume starts as a copy of this directory.
    && touch /var/log/nginx/rigwatch-push.log \
    && chmod 0644 /var/log/nginx/rigwatch-push.log
# logrotate reads a configuration only when root owns it, so it is copied, not mounted.
COPY push-door.logrotate /etc/logrotate.d/rigwatch-push-door
