"""`python -m scheduler` runs the eastwest command."""

import signal
import sys

_early: list[int] = []


def _record(number, _frame) -> None:
    _early.append(number)


# Before anything else loads: a signal from here on is kept and handed to the command.
for _number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_number, _record)

from scheduler.cli import main  # noqa: E402

sys.exit(main(early_signals=_early))
