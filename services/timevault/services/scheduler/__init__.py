"""Scheduler service: starts each plan's backups at its daily/weekly slots."""
