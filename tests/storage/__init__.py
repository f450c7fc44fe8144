"""Tests of the storage layer: one conformance suite per location, wrappers, faults."""
