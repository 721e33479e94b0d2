"""The ``bptt`` command's entry point, also run by ``python -m bptt``.

Until the command's modules are imported nothing has started that could be lost, so Ctrl-C or
SIGTERM then ends the process at once with one line; ``bptt.cli`` takes the signals over when a
command starts, and from there a run saves its state before it exits.  A signal the process
was started ignoring stays ignored.
"""

import os
import signal


def _quit(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(128 + signum)


def main():
    """Run the ``bptt`` command with the signals handled from its first instruction."""
    for s in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(s) is not signal.SIG_IGN:     # as a shell leaves them for `cmd &`
            signal.signal(s, _quit)
    from bptt.cli import main as command

    command()


if __name__ == "__main__":
    main()
