"""The ``tts-gateway`` command: serve, dial, check-config, bench, bench pool, prompts."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import sys

from gateway.carriers.registry import CARRIERS, DEFAULT_CARRIER
from gateway.config import ConfigError, load_config

DEFAULT_CONFIG = "gateway.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tts-gateway",
                                     description="Streaming TTS into phone calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--control-token-env", metavar="VAR",
                       help="the environment variable holding the control API's bearer token "
                            "(overrides auth.control_token_env)")
    serve.add_argument("--workers", default="1", metavar="N",
                       help="run N gateway processes sharing the port (SO_REUSEPORT, Linux), "
                            "under a supervisor that restarts a worker that dies; 'auto': one "
                            "per core (default: 1, a single process)")
    serve.add_argument("--worker-ports", type=int, metavar="FIRST",
                       help="with --workers: worker I also listens alone on port FIRST+I, to "
                            "scrape its /metrics and reach its calls' control API; required "
                            "with cluster.redis_url (each worker registers that port)")
    # set by the supervisor of --workers for each worker it starts
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-restarts", type=int, default=0, help=argparse.SUPPRESS)

    check = sub.add_parser("check-config", help="validate gateway.yaml and say what is wrong")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    tcp = "/".join(name for name, spec in CARRIERS.items() if spec.transport == "tcp")
    by_parameter = "/".join(name for name, spec in CARRIERS.items() if spec.route_as_parameter)
    dial = sub.add_parser("dial", help="place a simulated carrier call into a running gateway")
    dial.add_argument("--url", default="ws://127.0.0.1:8080",
                      help=f"the gateway's base URL (ws:// or wss://; tcp://host:port for {tcp})")
    dial.add_argument("--carrier", default=DEFAULT_CARRIER, choices=list(CARRIERS))
    dial.add_argument("--format", dest="media_format",
                      help="the audio format the carrier announces, e.g. mulaw/8000, alaw/8000, "
                           "l16/16000 (default: the carrier's usual one)")
    dial.add_argument("--api-url", help="the control API's base URL (default: from --url; "
                                        f"http://<host>:8080 for {tcp})")
    dial.add_argument("--route", help=f"route name ({by_parameter}: the 'route' custom "
                                      "parameter; other carriers: in the URL path)")
    dial.add_argument("--route-in-path", action="store_true",
                      help=f"{by_parameter}: put the route in the URL path instead")
    dial.add_argument("--text", action="append", default=[],
                      help="say this through the control API once the call is up (repeatable)")
    dial.add_argument("--token", help="control API bearer token, if the gateway requires one")
    dial.add_argument("--out", help="write what the caller hears to this WAV file")
    dial.add_argument("--caller-audio", metavar="FILE.wav",
                      help="what the caller says: a mono 16-bit WAV file (default: silence)")
    dial.add_argument("--caller-audio-at", metavar="SECONDS", type=float, default=0.0,
                      help="start the caller's audio this many seconds into the call")
    dial.add_argument("--digits", metavar="KEYS@SECONDS,...",
                      help='keys the caller presses, each at its second of the call, e.g. '
                           '"2@3.5,1@8" (an IVR menu: press 2, then 1)')
    dial.add_argument("--quiet-seconds", type=float, default=1.5,
                      help="hang up after the gateway has been silent this long")
    dial.add_argument("--max-seconds", type=float, default=60.0,
                      help="hang up after this long at most")
    dial.add_argument("--json", action="store_true", help="print the figures as JSON")

    sub.add_parser("bench", help="benchmark latency, calls per core and audio quality "
                                 "(tts-gateway bench --help); 'tts-gateway bench pool': first "
                                 "audio with a warm provider pool vs a cold connection "
                                 "(tts-gateway bench pool --help); 'tts-gateway bench prompts': a "
                                 "prompt's first frame, cached vs synthesized; 'tts-gateway bench "
                                 "cluster': control latency direct vs forwarded, Redis "
                                 "operations per call, calls per machine with --workers",
                   add_help=False)

    sub.add_parser("prompts", help="the prompt cache: warm, list, purge (tts-gateway prompts "
                                   "--help)", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prompts"]:
        from gateway.prompts.cli import main as prompts_main

        return prompts_main(argv[1:])
    if argv[:2] == ["bench", "prompts"]:
        from gateway.bench.prompts import main as bench_prompts_main

        return bench_prompts_main(argv[2:])
    if argv[:2] == ["bench", "cluster"]:
        from gateway.bench.cluster import main as bench_cluster_main

        return bench_cluster_main(argv[2:])
    if argv[:2] == ["bench", "pool"]:
        from gateway.bench.pool import main as bench_pool_main

        return bench_pool_main(argv[2:])
    if argv[:1] == ["bench"]:
        from gateway.bench.load import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "serve":
        return _serve(args)
    return asyncio.run(_dial(args))


def _check_config(path: str) -> int:
    try:
        config = load_config(path)
        from gateway.http.app import build_providers

        build_providers(config)
        _check_control_access(config, config.server.host, config.server.port, path)
        from gateway.prompts.recorded import check_files

        if problems := check_files(config.prompts):
            raise ConfigError(problems, path)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    print(f"{path}: OK ({len(config.providers)} provider(s), {len(config.routes)} route(s), "
          f"carriers: {', '.join(config.carriers)})")
    return 0


def _serve(args) -> int:
    from gateway import logs
    from gateway.http.app import create_app
    from gateway.http.keys import METRICS, WORKER
    from gateway.http.server import serve

    try:
        config = load_config(args.config)
        logs.setup(config.log_level, config.log_format)
        host = args.host or config.server.host
        port = args.port if args.port is not None else config.server.port
        config = _control_access(config, args, host, port)
        if args.worker_index is None and _worker_count(args.workers) > 1:
            return _supervise(args, config, host, port, _worker_count(args.workers))
        if args.worker_index is None and args.worker_ports is not None:
            raise ConfigError(["--worker-ports: only with --workers 2 or more"], "command line")
        own_port = None
        if args.worker_index is not None and args.worker_ports is not None:
            own_port = args.worker_ports + args.worker_index
            config = _advertise_own_port(config, own_port)
        app = create_app(config)
    except ConfigError as exc:
        print(f"cannot start: {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    if args.worker_index is not None:
        app[WORKER] = args.worker_index
        app[METRICS].worker_restarts.inc(max(0, args.worker_restarts))
        run = _serve_worker(serve(app, host, port, banner=_banner(config), reuse_port=True,
                                  own_port=own_port))
    else:
        run = serve(app, host, port, banner=_banner(config))
    # Fewer, cheaper collections: the media clock must not stall behind a full collection
    # of a heap that is mostly long-lived (the voice model, imported modules).
    gc.set_threshold(50_000, 20, 100)
    # SIGTERM (or SIGINT) drains: not ready, new calls refused, calls in progress go on for
    # up to server.drain_timeout_s; a second signal hangs them up now (gateway/http/drain.py).
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(run)
    return 0


def _worker_count(value: str) -> int:
    from gateway.workers import worker_count

    try:
        return worker_count(value)
    except ValueError as exc:
        raise ConfigError([str(exc)], "command line") from None


def _supervise(args, config, host: str, port: int, count: int) -> int:
    """``serve --workers N``: start N workers on ``host:port`` and watch them
    (gateway/workers.py). A problem that stops them all from starting is a ConfigError."""
    from gateway.workers import Supervisor, sharing_problem

    if problem := sharing_problem(host, port, count, args.worker_ports):
        raise ConfigError([problem], "command line")
    if config.cluster.redis_url and args.worker_ports is None:
        # the shared port reaches any worker: a request forwarded to it would find the call
        # only by chance, so each worker advertises its own port (_advertise_own_port)
        raise ConfigError(["--workers with cluster.redis_url needs --worker-ports FIRST: "
                           "each worker registers its calls under its own port FIRST+I, "
                           "which the other instances forward control requests to"],
                          "command line")

    def command(index: int, restarts: int) -> list[str]:
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", args.config,
                "--host", host, "--port", str(port), "--worker-index", str(index),
                "--worker-restarts", str(restarts)]
        if args.control_token_env:  # the name of the variable; the token stays in the env
            argv += ["--control-token-env", args.control_token_env]
        if args.worker_ports is not None:
            argv += ["--worker-ports", str(args.worker_ports)]
        return argv

    # a worker's drain is bounded (gateway/http/drain.py); past that and its shutdown, kill
    stop_timeout_s = config.server.drain_timeout_s + config.playout.hangup_mark_timeout_s + 15.0
    return Supervisor(command, count, stop_timeout_s).run()


def _advertise_own_port(config, own_port: int):
    """A worker registers its calls in the cluster directory under its own port: the host
    of ``cluster.instance_url`` with ``own_port``."""
    if not config.cluster.instance_url:
        return config
    from gateway.workers import with_port

    cluster = dataclasses.replace(config.cluster,
                                  instance_url=with_port(config.cluster.instance_url, own_port))
    return dataclasses.replace(config, cluster=cluster)


async def _serve_worker(serving) -> None:
    """A worker serves like ``serve``, and drains by itself if its supervisor vanishes (its
    parent changes): nothing else would ever send it SIGTERM."""
    import signal

    parent = os.getppid()

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # the same drain as a signal from outside

    watch = asyncio.get_running_loop().create_task(watch_parent())
    try:
        await serving
    finally:
        watch.cancel()


def _control_access(config, args, host: str, port: int):
    """The config with the token ``--control-token-env`` names; ConfigError when the control
    API would be open beyond this host (gateway/http/control_access.py)."""
    token_env = args.control_token_env
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError([f"--control-token-env: environment variable {token_env} is "
                               "not set"], "command line")
        config = dataclasses.replace(config, control_token=token)
    _check_control_access(config, host, port, args.config)
    return config


def _check_control_access(config, host: str, port: int, source: str) -> None:
    from gateway.http.control_access import exposure_problem, warn_if_open

    problem = exposure_problem(config, host)
    if problem:
        raise ConfigError([problem], source)
    warn_if_open(config, host, port)


def _fast_loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _banner(config):
    def print_banner(text: str) -> None:
        paths, listeners = [], []
        for name, settings in config.carriers.items():
            spec, options = CARRIERS[name], settings.options
            if spec.transport == "tcp":
                listeners.append(f"{spec.display_name} on tcp://{options['host']}:"
                                 f"{options['port']}")
            else:
                paths.append(f"/v1/media/{name}")
        media = ", ".join(paths + listeners)
        print(text.replace("(Press CTRL+C to quit)", f"- media: {media}; control: /v1/calls"),
              flush=True)
    return print_banner


async def _dial(args) -> int:
    import aiohttp

    from gateway.sim.dial import dial_and_report

    try:
        report = await dial_and_report(
            base_url=args.url, carrier=args.carrier, route=args.route,
            route_in_path=args.route_in_path, texts=args.text, token=args.token, out=args.out,
            quiet_seconds=args.quiet_seconds, max_seconds=args.max_seconds,
            media_format=args.media_format, api_url=args.api_url,
            caller_audio=args.caller_audio, caller_audio_at=args.caller_audio_at,
            digits=args.digits)
    except aiohttp.WSServerHandshakeError as exc:
        print(f"the gateway refused the media stream: HTTP {exc.status} {exc.message}",
              file=sys.stderr)
        return 2
    except (aiohttp.ClientError, OSError, TimeoutError, PermissionError, RuntimeError,
            ValueError) as exc:
        print(f"cannot complete the call to {args.url}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>28}: {value}")
    return 0 if report.get("frames_received", 0) > 0 and not report.get("violations") else 1


if __name__ == "__main__":
    sys.exit(main())
