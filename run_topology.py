#!/usr/bin/env python3
"""Run the MCX migration emulator from a checkout: the same as the installed ``mcx-emulator``.

    python run_topology.py --help
"""

import sys

from emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
