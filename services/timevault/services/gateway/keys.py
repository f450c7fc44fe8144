"""Typed keys for what the application holds: its config, NATS connection and OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from nats.aio.client import Client as NATS

from timevault.services.gateway.config import GatewayConfig

CONFIG = web.AppKey("config", GatewayConfig)
NATS_CLIENT = web.AppKey("nats", NATS)
OPENAPI = web.AppKey("openapi", bytes)
STOPPING = web.AppKey("stopping", asyncio.Event)
"""Set on shutdown so open event streams end at once instead of holding shutdown up."""
