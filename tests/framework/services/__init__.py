"""Tests of the services planner (a package: ``test_planner``/``test_spec`` also exist under jobs/)."""
