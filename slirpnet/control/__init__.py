"""Operating a running server: the control API, its client, metrics and packet capture."""
