"""S3 access keys given for a plan's location (web UI, API), kept like the write keys: in the
catalog's database (mode 0600), handed only to the services that open the location
(`PlanSecrets`), never in a reply, an event, a log line or a notification."""

from __future__ import annotations

import msgspec

from timevault.proto.plans import S3Credentials
from timevault.services.catalog.db import CatalogDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS plan_credentials (
    plan_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
"""


class CredentialStore:
    """The ``plan_credentials`` table. Writes happen inside the catalog's transactions."""

    def __init__(self, db: CatalogDB) -> None:
        self.db = db

    async def init(self) -> None:
        await self.db.add_schema(SCHEMA)

    async def get(self, plan_id: str) -> S3Credentials | None:
        rows = await self.db.fetch_all("SELECT data FROM plan_credentials WHERE plan_id=?", (plan_id,))
        return msgspec.json.decode(bytes(rows[0][0]), type=S3Credentials) if rows else None

    async def plan_ids(self) -> set[str]:
        return {row[0] for row in await self.db.fetch_all("SELECT plan_id FROM plan_credentials")}

    async def save(self, plan_id: str, credentials: S3Credentials) -> None:
        await self.db.write("INSERT OR REPLACE INTO plan_credentials (plan_id, data) VALUES (?, ?)",
                            (plan_id, msgspec.json.encode(credentials)))

    async def delete(self, plan_id: str) -> None:
        await self.db.write("DELETE FROM plan_credentials WHERE plan_id=?", (plan_id,))
