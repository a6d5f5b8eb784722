# One image for every broker-mesos process: `bmesos master`, `bmesos agent`, `bmesos run`, `bmesos watch`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY broker_mesos ./broker_mesos
RUN pip install . \
 && useradd --create-home --uid 10001 bmesos \
 && mkdir -p /var/lib/bmesos \
 && chown bmesos:bmesos /var/lib/bmesos

USER bmesos
WORKDIR /home/bmesos
CMD ["bmesos", "--help"]
