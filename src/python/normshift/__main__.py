"""The ``normshift`` command, as the wheel installs it (and ``python -m normshift``): the same program as the
binary ``cargo build`` makes, run from the native module."""

import sys


def main() -> None:
    from . import _native

    sys.stdout.flush()
    sys.exit(_native.cli(sys.argv))


if __name__ == "__main__":
    main()
