"""The ``ptychostitch`` console command that the wheel installs: the Rust command-line tool
itself (``ptychostitch_cli::run``, the same code as the cargo-built binary), run in this
process through the extension module. Not a second implementation: every subcommand, option,
message, exit status, progress bar and signal behaves as the binary's."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from ptychostitch import _native
    except KeyboardInterrupt:  # Ctrl-C while Python was still starting: no traceback
        sys.stderr.write("error: interrupted; no output was changed that was not complete\n")
        sys.exit(130)
    sys.exit(_native.cli(sys.argv))


if __name__ == "__main__":
    main()
