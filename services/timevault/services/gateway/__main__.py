"""``python -m timevault.services.gateway --nats URL --listen HOST:PORT [--token-file F | $TIMEVAULT_TOKEN]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from timevault.services.common import logs
from timevault.services.common.runner import DEFAULT_NATS
from timevault.services.gateway.app import create_app
from timevault.services.gateway.config import ConfigError, GatewayConfig, load_token, parse_listen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m timevault.services.gateway",
                                description="TimeVault HTTP gateway: the /api/v1 API and the web UI.")
    p.add_argument("--nats", default=os.environ.get("TIMEVAULT_NATS", DEFAULT_NATS), help="NATS URL")
    p.add_argument("--listen", default="127.0.0.1:7480", metavar="HOST:PORT",
                   help="address to listen on (default loopback only)")
    p.add_argument("--token-file", metavar="F",
                   help="file with the bearer token (mode 0600; gateway.json works too); "
                        "default: $TIMEVAULT_TOKEN")
    p.add_argument("--data-dir", default=os.environ.get("TIMEVAULT_DATA_DIR"),
                   help="TimeVault data dir (accepted for `timevault up`; the gateway keeps no files)")
    p.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body in bytes")
    logs.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup("gateway", args.log_level, args.log_format)
    try:
        host, port = parse_listen(args.listen)
        config = GatewayConfig(nats_url=args.nats, token=load_token(args.token_file), host=host, port=port,
                               max_body=args.max_body)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    web.run_app(create_app(config), host=config.host, port=config.port, access_log_format=(
        '%a "%r" %s %b %Tfs'), print=lambda text: logging.getLogger("timevault.gateway").info(text),
        shutdown_timeout=5,
        # A snapshot path in a query (…/ls?path=) is up to 4096 characters, 12 bytes each when encoded.
        max_line_size=64 * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
