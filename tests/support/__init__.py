"""What the tests run on, not tests: servers they start (Redis, a Redis Cluster, Redis over
TLS), the key names they expect, diffs written at a chosen score, and the settings and
entry point of the processes some tests start."""
