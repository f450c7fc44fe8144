"""Restorer service: restore jobs with a password held in memory for that job only."""
