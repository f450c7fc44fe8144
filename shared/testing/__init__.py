"""Helpers shared by tests and benchmarks (real servers on loopback, never mocks)."""
