"""Opening a plan's location from a service: S3 endpoints on private addresses need permission.

A service opens whatever location a plan names, and plans come from HTTP requests. An S3
endpoint on a loopback, link-local or private address would make the services talk to this
machine's or this network's internal servers (a metadata service, an admin port) on the
requester's behalf. So in service mode such endpoints are refused unless the operator allowed
them: ``timevault up --allow-private-endpoints`` (a MinIO on the LAN), which sets
``TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS=1`` for every service.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from timevault.core.storage import Storage, open_location
from timevault.proto.plans import S3Credentials

if TYPE_CHECKING:
    from timevault.core.storage.s3 import S3Credentials as CoreCredentials

ALLOW_PRIVATE_ENV = "TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS"


def private_endpoints_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def open_service_location(url: str, credentials: S3Credentials | None = None,
                          space_token: str | None = None) -> Storage:
    """`open_location` with the service policy for S3 endpoints (see the module docstring), the
    plan's S3 access key when the catalog keeps one (`PlanSecrets.credentials`), and for a
    TimeVault Space location the device token (`PlanSecrets.space_token`)."""
    return open_location(url, core_credentials(credentials), allow_private_endpoints=private_endpoints_allowed(),
                         space_token=space_token)


def core_credentials(credentials: S3Credentials | None) -> CoreCredentials | None:
    """The engine's form of a kept access key."""
    if credentials is None:
        return None
    from timevault.core.storage.s3 import S3Credentials as CoreCredentials

    return CoreCredentials(credentials.access_key_id, credentials.secret_access_key, credentials.session_token)
