"""TimeVault Space: the hosted backup location (``timevault space serve``).

One aiohttp server for many TimeVault installations: accounts with quotas, sign-in of devices by
the OAuth 2.0 Device Authorization Grant (RFC 8628), one namespace of repositories per account,
soft deletes kept in a trash, and a few web pages for the account holder. Objects are stored
through `timevault.core.storage` (a folder or S3); the Space only ever sees ciphertext.

Layer: imports `timevault.core` and aiohttp, never `timevault.services` or `timevault.cli`.
"""
