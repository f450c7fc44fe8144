"""Pieces every TimeVault service shares: the NATS request wrapper, the process runner, ids and time."""
