"""TimeVault HTTP gateway: the versioned ``/api/v1`` API, live events and the web UI.

Run alone with ``python -m timevault.services.gateway``; build it in tests with `create_app`.
"""
