"""Entry point of the bundled application: ``medviewer`` with the same arguments as the installed command."""

import multiprocessing
import sys

if __name__ == "__main__":
    # Must come first in a frozen program: a worker process started by multiprocessing (spawn or
    # forkserver) runs this executable again, and freeze_support() turns it into that worker.
    multiprocessing.freeze_support()

    from medviewer.cli import main

    sys.exit(main())
