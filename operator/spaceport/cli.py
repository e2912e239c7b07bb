"""The `spaceport` command: stage runner for Jobs, local pipeline, CRD generation, the operator."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from spaceport.contract import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRYABLE, TERMINATION_LOG, StageError

EXIT_USAGE = 64
"""Wrong command-line usage (argparse uses 2, which the stage contract reserves for bad input)."""


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
    from spaceport.stages.runner import run_stage

    try:
        result = run_stage(args.name, args.input, args.output, args.config)
    except StageError as e:
        logging.getLogger("spaceport").error("%s failed: %s", args.name, e)
        _write_termination_message(json.dumps({"stage": args.name, "reason": e.reason, "message": str(e)[:3000]}))
        return e.exit_code
    _write_termination_message(result.termination_message())
    print(result.model_dump_json(by_alias=True, exclude_none=True))
    return EXIT_OK


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


def cmd_run(args: argparse.Namespace) -> int:
    from spaceport.console import run_with_progress

    try:
        run_with_progress(args.photos, args.out, _load_config(args.config))
    except StageError as e:
        print(f"spaceport: error: {e}", file=sys.stderr)
        return e.exit_code
    return EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    from spaceport.crd import main as crd_main

    return crd_main(args.files)


def cmd_operator(args: argparse.Namespace) -> int:
    from spaceport.controller.main import run_operator

    return run_operator(namespaces=args.namespace, all_namespaces=args.all_namespaces,
                        standalone=args.standalone, priority=args.priority, peering=args.peering)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spaceport", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stage", help="run one pipeline stage (what each Job runs)")
    p.add_argument("name", choices=["sfm", "train", "compress"])
    p.add_argument("--input", required=True, help="input URI: s3://bucket/prefix or a path")
    p.add_argument("--output", required=True, help="output URI of this stage")
    p.add_argument("--config", help="the stage's options: a JSON string or a JSON/YAML file")
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("run", help="run the whole pipeline locally, no cluster needed")
    p.add_argument("photos", help="folder (or s3:// prefix) of photos")
    p.add_argument("--out", required=True, help="output folder (or s3:// prefix)")
    p.add_argument("--config", help="YAML/JSON file with sfm/train/compress sections")
    p.set_defaults(func=cmd_run)

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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("spaceport: interrupted", file=sys.stderr)
        return 130
    except StageError as e:
        print(f"spaceport: error: {e}", file=sys.stderr)
        return e.exit_code


__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_RETRYABLE", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
