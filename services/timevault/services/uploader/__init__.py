"""Uploader service: turns streamed encrypted blobs into durable packs in the plan's location."""
