"""The report of a sweep: ``python scripts/report.py outputs/multirun/<date>/<time> [-o report.html]``.

Reads every ``summary.json`` under the folder and writes one self-contained HTML page (default
``<folder>/report.html``): the train × test degradation heatmaps, per-model bars over seeds, learning
curves, the last validation panels and a table of runs. Prints the page's path. Summaries that cannot be
read are listed on stderr and in the page. Bad input: one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("sweep_dir", type=Path, help="a folder of runs, e.g. outputs/multirun/<date>/<time>")
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="the HTML file (default <sweep_dir>/report.html)"
    )
    parser.add_argument(
        "--panel-size",
        type=int,
        default=1024,
        help="longest side in pixels of embedded panels (default 1024)",
    )
    args = parser.parse_args(argv)
    if args.panel_size < 16:
        print(f"error: --panel-size={args.panel_size}; expected at least 16 pixels", file=sys.stderr)
        return 2

    from psr.reporting.dashboard import ReportError, write_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            path = write_report(args.sweep_dir, args.output, panel_size=args.panel_size)
        except ReportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
