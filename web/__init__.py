"""The control plane's HTTP API (Flask + flask-smorest) and the overlay CLI."""
