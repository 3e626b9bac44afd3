"""Real parts for the tests: a Ray cluster, service processes, a PostgreSQL database."""
