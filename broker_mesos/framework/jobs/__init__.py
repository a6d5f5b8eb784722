"""Scheduled jobs (like Chronos, Metronome, Nomad periodic or Kubernetes CronJob), as a pure core.

``spec`` reads a job's definition, ``cron`` turns its schedule into instants, ``runs`` records what
became of each scheduled instant, and ``planner`` decides (offers, status updates, time, operators'
commands in; effects out). The shell that subscribes, persists the state and talks to the CLI lives
beside them and is the only part doing I/O.
"""
