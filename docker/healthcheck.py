#!/usr/bin/env python3
"""Container health check: exit 0 when ``URL`` answers 2xx within the timeout, else 1.

    ecocompress-healthcheck http://127.0.0.1:4200/api/ready
    ecocompress-healthcheck http://127.0.0.1:5000/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default --host mlflow:5000

``--host`` sends that Host header: MLflow answers /health whatever the Host, but refuses
API calls whose Host is not in ``--allowed-hosts``, so its check asks an API route with the
name the other containers use. Standard library only: it runs in every container.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--host", help="Host header to send (default: the URL's)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds")
    args = ap.parse_args(argv)
    headers = {"Host": args.host} if args.host else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(args.url, headers=headers), timeout=args.timeout
        ) as r:
            ok = 200 <= r.status < 300
            print(f"{args.url}: HTTP {r.status}")
    except urllib.error.HTTPError as e:
        print(f"{args.url}: HTTP {e.code}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"{args.url}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
