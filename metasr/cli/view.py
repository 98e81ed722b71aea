"""``metasr view``: the continuous-zoom page on 127.0.0.1 (the model runs in the browser; no PyTorch needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metasr.cli.common import int_range

__all__ = ["register"]


def cmd_view(args: argparse.Namespace) -> int:
    from metasr.view import ViewServer, load_site, vendor_files

    vendor_files()  # the one-line install hint before anything else (an export of the bundled model included)
    if args.artifacts:
        artifacts = Path(args.artifacts)
    else:
        from metasr.artifacts import default_artifacts

        artifacts = default_artifacts()
    site = load_site(artifacts)
    # Ctrl-C: a KeyboardInterrupt out of serve_forever closes the socket on its way out (exit 130, one line)
    with ViewServer(site, args.port) as server:
        print(f"metasr view: serving {artifacts} at {server.url} (127.0.0.1 only; Ctrl-C stops)", flush=True)
        server.serve_forever()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="continuous zoom in the browser: the model runs in the page (onnxruntime-web)")
    p.add_argument("--artifacts", help="artifact directory with the portable graphs (default: the bundled model)")
    p.add_argument(
        "--port", type=int_range(0, 65535), default=8080, help="port on 127.0.0.1 (default 8080; 0: any free port)"
    )
    p.set_defaults(func=cmd_view)
