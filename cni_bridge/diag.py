"""The one logging path: plugin calls, the resident server and the node agent write here.

Not the logging module: importing it costs about 4 ms, which every plugin call would pay for
the handful of lines it may print. Lines read ``cni-bridge WARNING: message``, with logging's
%-style arguments, on whatever ``sys.stderr`` is at the time (a served call's is the caller's).
`configure` sets the threshold (``CNI_BRIDGE_LOG_LEVEL``; unknown names mean the default) and
the prefix at the start of every call and long-running command: the only state here.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

LEVEL_ENV = "CNI_BRIDGE_LOG_LEVEL"
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
DEFAULT_LEVEL = "WARNING"
PREFIX = "cni-bridge"
_threshold = [LEVELS[DEFAULT_LEVEL]]
_prefix = [PREFIX]


def configure(environ: Mapping[str, str], default: str = DEFAULT_LEVEL,
              prefix: str = PREFIX) -> None:
    name = environ.get(LEVEL_ENV, default).upper()
    _threshold[0] = LEVELS.get(name, LEVELS[default])
    _prefix[0] = prefix


def emit(level: str, msg: str, args: tuple[object, ...] = (), exc_info: bool = False) -> None:
    if LEVELS[level] < _threshold[0]:
        return
    text = msg % args if args else msg
    if exc_info:
        import traceback

        text += "\n" + traceback.format_exc().rstrip()
    try:
        sys.stderr.write(f"{_prefix[0]} {level}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: diagnostics never fail a call
        pass


class Logger:
    __slots__ = ()  # stateless: lines carry no logger name, only the level

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        emit("DEBUG", msg, args, exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        emit("INFO", msg, args, exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        emit("WARNING", msg, args, exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        emit("ERROR", msg, args, exc_info)

    def exception(self, msg: str, *args: object) -> None:
        emit("ERROR", msg, args, True)


def logger(name: str) -> Logger:
    """`name` (``__name__``) is accepted as logging.getLogger takes it, and unused."""
    return Logger()
