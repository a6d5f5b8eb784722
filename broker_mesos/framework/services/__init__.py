"""The built-in services framework's pure core (a Marathon-like keeper of long-running tasks).

``spec`` reads a service's YAML description, ``constraints`` and ``backoff`` are the placement and
restart rules, ``planner.ServicePlanner`` turns offers, status updates and operators' commands into
effects (``broker_mesos.framework.planning``); ``rolling`` holds its deployment rules. Nothing here
performs I/O or reads a clock: the shell passes ``now`` in and performs the effects.
"""
