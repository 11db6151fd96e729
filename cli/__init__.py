"""The ``overlay`` command: an HTTP client of the API, and the simulator's file input/output."""
