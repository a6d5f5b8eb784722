"""A simulator: the pure master core on a virtual clock, with in-process agents and frameworks.

No broker, no processes, no wall clock: ``Simulation`` (``engine``) drives ``MasterState`` and feeds
it what agents and frameworks would send; ``locality_experiment`` reproduces the Mesos paper's
data-locality experiment on it. Imports the core and the pure SDK parts only, never pika or ``bus``.
"""
