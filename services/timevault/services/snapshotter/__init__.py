"""Snapshotter service: runs backup jobs from the JetStream work queue."""
