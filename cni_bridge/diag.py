"""What a plugin call says besides its result: warnings (and more, when asked for) on stderr.

Not the logging module: importing it (with traceback, threading, string, warnings...) costs
about 4 ms, which every plugin call would pay for the handful of lines it may print. A `Logger`
here has the four methods the plugins use, with logging's %-style arguments and ``exc_info``
(the traceback module is imported only then). Lines read ``cni-bridge WARNING: message``, on
whatever ``sys.stderr`` is at the time (a served call's is the caller's). The threshold comes from
``CNI_BRIDGE_LOG_LEVEL`` (DEBUG, INFO, WARNING by default, ERROR), set by `configure` at the
start of every call; it is the only state here. The operator's long-running commands (the
resident server) use the logging module.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

LEVEL_ENV = "CNI_BRIDGE_LOG_LEVEL"
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
DEFAULT_LEVEL = "WARNING"
_threshold = [LEVELS[DEFAULT_LEVEL]]


def configure(environ: Mapping[str, str]) -> None:
    """Set the level for this call from its environment (unknown names mean WARNING)."""
    name = environ.get(LEVEL_ENV, DEFAULT_LEVEL).upper()
    _threshold[0] = LEVELS.get(name, LEVELS[DEFAULT_LEVEL])


class Logger:
    __slots__ = ()  # stateless: lines carry no logger name, only the level

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit("DEBUG", msg, args, exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit("INFO", msg, args, exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit("WARNING", msg, args, exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit("ERROR", msg, args, exc_info)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= _threshold[0]

    def _emit(self, level: str, msg: str, args: tuple[object, ...], exc_info: bool) -> None:
        if not self.enabled(level):
            return
        text = msg % args if args else msg
        if exc_info:
            import traceback

            text += "\n" + traceback.format_exc().rstrip()
        try:
            sys.stderr.write(f"cni-bridge {level}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: diagnostics never fail a call
            pass


def logger(name: str) -> Logger:
    """`name` (``__name__``) is accepted as logging.getLogger takes it, and unused."""
    return Logger()
