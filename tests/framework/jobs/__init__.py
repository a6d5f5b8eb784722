"""Makes these modules ``jobs.test_*``: tests/framework/services has test modules of the same names."""
