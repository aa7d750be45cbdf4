"""``tts-gateway prompts warm|list|purge``: the prompt cache from the command line.

They work on the cache folder of ``gateway.yaml`` (``prompt_cache.dir``) directly, so also
while no gateway runs; a running gateway sees a purged entry as a miss at its next use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.prompts.store import PromptStore


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tts-gateway prompts",
                                     description="The prompt cache (prompt_cache.dir).")
    sub = parser.add_subparsers(dest="action", required=True)
    warm = sub.add_parser("warm", help="synthesize every route's prompts for every "
                                       "configured carrier format (what is not cached yet)")
    listing = sub.add_parser("list", help="the cached prompts, most recently used first")
    purge = sub.add_parser("purge", help="remove cached prompts (all, or one route's)")
    purge.add_argument("--route", help="only the prompts this route wrote or played")
    for command in (warm, listing, purge):
        command.add_argument("--config", default="gateway.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        route = getattr(args, "route", None)
        if route is not None and route not in config.routes:
            raise ConfigError([f"--route: {route!r} is not a configured route"],
                              "command line")
    except ConfigError as exc:
        print(f"{exc.source}: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, config))


async def _run(args, config: GatewayConfig) -> int:
    store = PromptStore(config.prompt_cache.dir, config.prompt_cache.max_bytes)
    await store.load()
    if args.action == "list":
        now = time.time()
        for entry in store.entries():
            print(f"{entry['key'][:16]}  {entry['bytes']:>10} B  "
                  f"{now - entry['used_at']:>9.0f} s ago  {','.join(entry['routes']) or '-'}")
        print(f"{len(store)} prompt(s), {store.bytes} of {store.max_bytes} bytes in {store.dir}")
        return 0
    if args.action == "purge":
        removed = await store.purge(args.route)
        print(f"removed {removed['entries']} prompt(s), {removed['bytes']} bytes from {store.dir}")
        return 0
    return await _warm(config, store)


async def _warm(config: GatewayConfig, store: PromptStore) -> int:
    from gateway.http.app import build_providers
    from gateway.prompts.warm import warm

    try:
        providers = build_providers(config)
    except ConfigError as exc:
        print(f"{exc.source}: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    try:
        for provider in providers.values():
            await provider.start()
        async with asyncio.timeout(60):
            while not all(p.ready for p in providers.values()):
                await asyncio.sleep(0.05)
        counts = await warm(config, providers, store, progress=print)
    except Exception as exc:  # a provider that cannot start or connect
        print(f"cannot warm the prompt cache: {exc}", file=sys.stderr)
        return 1
    finally:
        for provider in providers.values():
            await provider.close()
    print(f"{counts['synthesized']} synthesized, {counts['cached']} already cached, "
          f"{counts['failed']} failed; {len(store)} prompt(s), {store.bytes} bytes in "
          f"{store.dir}")
    return 1 if counts["failed"] else 0
