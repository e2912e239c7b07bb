"""``python -m spaceport.synthetic OUT [--preset demo]``: write a synthetic drone flight's photos to OUT."""

from __future__ import annotations

import argparse

from spaceport.synthetic.flight import PRESETS, generate_flight


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m spaceport.synthetic", description=__doc__)
    ap.add_argument("out", help="folder for the JPEGs (created)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--no-gps", action="store_true", help="leave GPS tags out of the EXIF")
    ap.add_argument("--truth", action="store_true", help="also write flight.json (ground-truth cameras)")
    args = ap.parse_args()
    flight = generate_flight(args.out, preset=args.preset, gps=not args.no_gps, write_truth=args.truth)
    print(f"{len(flight.image_names)} images {flight.width}x{flight.height} ({flight.path}) in {flight.out_dir}, "
          f"rendered in {flight.render_seconds:.1f} s")


if __name__ == "__main__":
    main()
