# One image for every broker-mesos process: `bmesos master`, `bmesos agent`, `bmesos run`, `bmesos watch`,
# `bmesos principals`.
#
# It runs as the non-root user bmesos (uid 10001): the master, frameworks, monitors and `bmesos
# principals` need no privilege. The agent is the exception and runs as root (docker-compose.yml sets
# `user: root` on it): tasks must run as other users (nobody by default, never root) so that they cannot
# read the agent's credential or touch the agent, and only root can switch users. An agent run as
# bmesos works too, but then every task runs as bmesos, with the agent's own powers.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY broker_mesos ./broker_mesos
COPY examples /usr/share/bmesos/examples
# /run/bmesos/secrets and /run/bmesos/demo are the mount points of the compose file's URL-file volumes:
# a new named volume takes its mount point's owner and mode from the image, so these make the volumes
# writable by bmesos (the init service) and readable by nobody else (0700).
RUN pip install . \
 && useradd --create-home --uid 10001 bmesos \
 && mkdir -p /var/lib/bmesos /run/bmesos/secrets /run/bmesos/demo /run/bmesos/builtin \
 && chown bmesos:bmesos /var/lib/bmesos /run/bmesos/secrets /run/bmesos/demo /run/bmesos/builtin \
 && chmod 0700 /run/bmesos/secrets /run/bmesos/demo /run/bmesos/builtin

USER bmesos
WORKDIR /home/bmesos
CMD ["bmesos", "--help"]
