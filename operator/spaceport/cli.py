"""The `spaceport` command: stage runner for Jobs, local pipeline, CRD generation, the operator."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from spaceport.api.presets import PRESETS
from spaceport.api.stages import STAGES, stage
from spaceport.contract import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_RETRYABLE,
    TERMINATION_LOG,
    StageError,
    StaleOutputError,
)

EXIT_USAGE = 64
"""Wrong command-line usage (argparse uses 2, which the stage contract reserves for bad input)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C. Outputs are whole files and unfinished stages have no result.json: rerun to resume."""
EXIT_TERMINATED = 143
"""SIGTERM (`kill`, `docker stop`, a Pod's deletion), handled as Ctrl-C is: rerun to resume."""

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_RETRYABLE}    failure worth retrying (storage unreachable, out of memory, a crash)
  {EXIT_BAD_INPUT}    bad input, retrying cannot help: missing photos folder, no images, unwritable
       output folder, invalid config, port in use (`view`), unreadable file (`inspect`)
  {EXIT_USAGE}   wrong command-line usage
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); run the same command again to resume
  {EXIT_TERMINATED}  stopped by SIGTERM (kill, a container stop); run the same command again to resume
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception: the run stops as on Ctrl-C (whole files, no result.json for the stage it was in)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _stop_cleanly_on_sigterm() -> None:
    """Handle SIGTERM in Python, as Ctrl-C is. pycolmap installs glog's failure handler for SIGTERM when imported,
    which prints a native stack trace and kills the process mid-write; ours, installed after that import, replaces
    it. pycolmap's loops check for Python signals, so a stop during SfM ends within moments too."""
    with contextlib.suppress(ImportError):
        import pycolmap  # noqa: F401
    signal.signal(signal.SIGTERM, _on_sigterm)


def _stopped(err: KeyboardInterrupt) -> tuple[int, str]:
    if isinstance(err, Terminated):
        return EXIT_TERMINATED, "stopped by SIGTERM"
    return EXIT_INTERRUPTED, "interrupted"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _write_termination_message(text: str) -> None:
    path = os.environ.get("SPACEPORT_TERMINATION_LOG", TERMINATION_LOG)
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        pass  # not in a pod


def cmd_stage(args: argparse.Namespace) -> int:
    from spaceport.stages.runner import check_owner, next_free_run, run_stage

    owner, root = os.environ.get("SPACEPORT_OWNER"), os.environ.get("SPACEPORT_OUTPUT_ROOT")
    try:
        if owner and root:  # set by the operator on every stage Job
            check_owner(root, owner)
        result = run_stage(args.name, args.input, args.output, args.config, part=_stage_part(args))
    except StageError as e:
        logging.getLogger("spaceport").error("%s failed: %s", args.name, e)
        # A run folder holding other inputs' files (a re-created Reconstruction on a volume, which the operator
        # cannot list): the operator starts the run again at the next free number, which only the stage can see.
        next_run = next_free_run(root) if isinstance(e, StaleOutputError) and owner and root else None
        _write_termination_message(stage(args.name).failure(e.reason, str(e), next_run).to_json())
        return e.exit_code
    except KeyboardInterrupt as e:
        code, what = _stopped(e)
        logging.getLogger("spaceport").error("%s %s; a re-run resumes", args.name, what)
        _write_termination_message(stage(args.name).failure("Stopped", what).to_json())
        return code
    _write_termination_message(result.termination_message())
    print(result.model_dump_json(by_alias=True, exclude_none=True))
    return EXIT_OK


def _stage_part(args: argparse.Namespace) -> Any:
    """``--blocks K`` with ``--merge``, or with ``--block I`` (default: ``JOB_COMPLETION_INDEX``, which Kubernetes
    sets in each Pod of an Indexed Job); None without ``--blocks``."""
    from spaceport.contract import BadInputError, StagePart

    if args.blocks is None:
        if args.block is not None or args.merge:
            raise BadInputError("--block and --merge need --blocks")
        return None
    if args.merge:
        if args.block is not None:
            raise BadInputError("--merge and --block exclude each other")
        return StagePart(args.blocks)
    index = args.block
    if index is None:
        text = os.environ.get("JOB_COMPLETION_INDEX")
        if text is None or not text.isdigit():
            raise BadInputError(f"--blocks {args.blocks}: which block? give --block or run as an Indexed Job "
                                f"(JOB_COMPLETION_INDEX={text!r})")
        index = int(text)
    return StagePart(args.blocks, index)


def _load_config(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    import yaml

    from spaceport.contract import BadInputError

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"config file {path} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise BadInputError(f"config file {path}: expected a mapping of stage sections")
    return data


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def cmd_run(args: argparse.Namespace) -> int:
    from spaceport.console import run_with_progress

    try:
        run_with_progress(args.photos, args.out, _load_config(args.config), preset=args.preset)
    except StageError as e:
        print(f"spaceport: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        code, what = _stopped(e)
        print(f"spaceport: {what}; finished stages are kept: run the same command to resume", file=sys.stderr)
        return code
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from spaceport.demo import run_demo

    try:
        run_demo(args.out, preset=args.preset)
    except StageError as e:
        print(f"spaceport: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        code, what = _stopped(e)
        print(f"spaceport: {what}; run the same command to resume", file=sys.stderr)
        return code
    return EXIT_OK


def cmd_view(args: argparse.Namespace) -> int:
    from spaceport.viewer.serve import find_viewer_dir, make_server, url_of

    try:
        directory = find_viewer_dir(args.dir)
        server = make_server(directory, args.port)
    except StageError as e:
        print(f"spaceport: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    print(f"serving {directory}", file=sys.stderr)
    print(url_of(server), flush=True)
    print("press Ctrl-C to stop", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from spaceport.inspect import format_report, inspect_file

    try:
        info = inspect_file(args.file)
    except StageError as e:
        print(f"spaceport: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(info, indent=1) if args.json else format_report(info))
    return EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    from spaceport.crd import main as crd_main

    return crd_main(args.files)


def cmd_operator(args: argparse.Namespace) -> int:
    from spaceport.controller.main import run_operator

    return run_operator(namespaces=args.namespace, all_namespaces=args.all_namespaces,
                        standalone=args.standalone, priority=args.priority, peering=args.peering)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spaceport", description=__doc__, epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stage", help="run one pipeline stage (what each Job runs)")
    p.add_argument("name", choices=STAGES)
    p.add_argument("--input", required=True, help="input URI: s3://bucket/prefix or a path")
    p.add_argument("--output", required=True, help="output URI of this stage")
    p.add_argument("--config", help="the stage's options: a JSON string or a JSON/YAML file")
    p.add_argument("--blocks", type=int, help="train: partitioned training in this many blocks (see --block, --merge)")
    p.add_argument("--block", type=int, help="train --blocks: train this block (0-based) into OUTPUT/blocks/<n>; "
                   "default: $JOB_COMPLETION_INDEX")
    p.add_argument("--merge", action="store_true", help="train --blocks: merge the trained blocks into OUTPUT")
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("run", help="run the whole pipeline locally, no cluster needed")
    p.add_argument("photos", help="folder (or s3:// prefix) of photos")
    p.add_argument("--out", required=True, help="output folder (or s3:// prefix)")
    p.add_argument("--config", help=f"YAML/JSON file with {'/'.join(STAGES)} sections (and optionally preset)")
    p.add_argument("--preset", choices=PRESETS, help="per-stage defaults (image size, iterations, Gaussian cap, "
                   "SH bands) under the config's explicit fields; default: the config's preset, else standard")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="render a synthetic drone flight and reconstruct it on this machine (CPU)")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--preset", choices=PRESETS, help="default: draft, with the demo's own settings on top")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("view", help="serve a result's web viewer on 127.0.0.1 and print its URL")
    p.add_argument("dir", help="a `spaceport run` output, a runs/<n> folder or a compress folder")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("inspect", help="print what a .ply, .sog, SOG meta.json or streamed lod-meta.json holds")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("crd", help="print (or write) the CRD generated from the API models")
    p.add_argument("files", nargs="*", help="files to write; default stdout")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("operator", help="run the Kubernetes operator")
    p.add_argument("-n", "--namespace", action="append", default=[])
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    p.add_argument("--priority", type=int, default=None, help="peering priority (default: from the pod name)")
    p.add_argument("--peering", default="spaceport", help="peering object name")
    p.set_defaults(func=cmd_operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if args.command in ("run", "demo") and not args.verbose:
        # The progress bars tell the story; stage chatter (and COLMAP's glog) only with -v.
        level = logging.WARNING
        os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("run", "demo", "stage"):
            _stop_cleanly_on_sigterm()
        return args.func(args)
    except KeyboardInterrupt as e:
        code, what = _stopped(e)
        print(f"spaceport: {what}", file=sys.stderr)
        return code
    except StageError as e:
        print(f"spaceport: error: {e}", file=sys.stderr)
        return e.exit_code


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RETRYABLE", "EXIT_TERMINATED", "EXIT_USAGE",
           "main"]

if __name__ == "__main__":
    raise SystemExit(main())
