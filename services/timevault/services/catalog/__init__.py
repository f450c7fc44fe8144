"""Catalog service: plans, jobs, snapshots and the chunk index in SQLite, served over NATS."""
