"""The `sandboxctl` command (pyproject [project.scripts]): `sandboxctl mcp --url URL --token TOKEN` serves
sandboxctl's tools over stdio to a desktop MCP client (stdio.py). No Django needed."""

import argparse
import os
import sys

import anyio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandboxctl", description="sandboxctl's command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    mcp = commands.add_parser("mcp", help="serve sandboxctl's tools to an MCP client over stdio")
    mcp.add_argument("--url", default=os.environ.get("SANDBOXCTL_URL", "http://localhost:8000"),
                     help="the sandboxctl server (default: $SANDBOXCTL_URL or http://localhost:8000)")
    mcp.add_argument("--token", default=os.environ.get("SANDBOXCTL_TOKEN", ""),
                     help="an API token (default: $SANDBOXCTL_TOKEN)")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("an API token is needed: --token or SANDBOXCTL_TOKEN")
    from sandboxctl.agents import stdio

    anyio.run(stdio.serve, args.url, args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
