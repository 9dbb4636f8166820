"""Models the benchmark scripts measure: a registered model and its unregistered twin."""
