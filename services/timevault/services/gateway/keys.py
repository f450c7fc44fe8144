"""Typed keys for what the application holds: its config, NATS connection and OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from nats.aio.client import Client as NATS

from timevault.services.common.rpc import Stats
from timevault.services.gateway.config import GatewayConfig

CONFIG = web.AppKey("config", GatewayConfig)
NATS_CLIENT = web.AppKey("nats", NATS)
OPENAPI = web.AppKey("openapi", bytes)
STOPPING = web.AppKey("stopping", asyncio.Event)
"""Set on shutdown so open event streams end at once instead of holding shutdown up."""
HTTP_STATS = web.AppKey("http_stats", Stats)
"""Requests, errors and time per HTTP route (discovery and /metrics report them)."""
READY_CACHE = web.AppKey("ready_cache", dict)
"""The last readiness answer and until when it is reused."""
