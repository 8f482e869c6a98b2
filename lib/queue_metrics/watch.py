"""`queue-metrics watch`: a live view of every queue in the terminal, for a person on a one-off dyno
(`heroku run queue-metrics watch`).

Two parts:
- pure functions: `record` keeps the last ticks (`History`), `screen` lays them out as the lines of
  one frame for a terminal of a given size, `plain_lines` is a tick as plain lines (stdout not a
  terminal), `paint` adds a line's highlight;
- the driver (`Terminal`, `watch_terminal`, `watch_plain`): the only code here that touches the
  tty; it is handed its streams by cli.py and never reads os.environ.

Imported by the `watch` command only: `queue-metrics run` never loads it.
"""

from __future__ import annotations

import math
import os
import select
import signal
import time
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, TextIO, Tuple

from queue_metrics.errors import readable_name, show_name
from queue_metrics.loop import StopRequested, StopSignals, next_due
from queue_metrics.runner import Output, Ticker, _silence_stdout
from queue_metrics.sample import QueueSample, TickReport, sections

# A live view wants a new frame often enough to see a queue move, and each tick costs the
# datastore a few round trips: every 2 s, as watch(1) redraws by default.
DEFAULT_INTERVAL = 2.0
# The `--latency` threshold's default: the Sidekiq-on-Heroku practice this project comes from
# alerts when latency passes 30 s (issue 28).
DEFAULT_LATENCY_THRESHOLD = 30.0
# Other signs a row needs a look: jobs due for a while that did not enter the queue, and a job
# running for ten minutes (the alert rules of `queue-metrics alerts` use the same figures).
DUE_AGE_LIMIT = 60.0
RUNNING_AGE_LIMIT = 600.0
# Sizes kept per queue: the widest sparkline drawn.
KEPT_TICKS = 30
# The arrow compares the size now with the size this many ticks ago (one tick's step flickers
# between ↓ and → on a queue a worker drains a job every few ticks).
ARROW_TICKS = 5
# The error and notice lines at the bottom, at most.
MAX_BOTTOM_LINES = 3
# When the terminal's size cannot be read.
FALLBACK_SIZE = (80, 24)

SPARK_UNICODE = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.,-=+*#"
ARROWS_UNICODE = {1: "↑", -1: "↓", 0: "→"}
ARROWS_ASCII = {1: "^", -1: "v", 0: "-"}

# Line styles (`paint` turns them into escape sequences).
PLAIN = "plain"
HEADER = "header"
ATTENTION = "attention"

# Escape sequences, VT100/xterm: every terminal `heroku run` is used from knows them.
CSI = "\x1b["
ALTERNATE_SCREEN_ON = CSI + "?1049h"
ALTERNATE_SCREEN_OFF = CSI + "?1049l"
CURSOR_HIDE = CSI + "?25l"
CURSOR_SHOW = CSI + "?25h"
CURSOR_HOME = CSI + "H"
CLEAR_LINE_END = CSI + "K"
CLEAR_BELOW = CSI + "J"
RESET = CSI + "0m"
STYLES = {HEADER: CSI + "1m", ATTENTION: CSI + "7m"}
COLOR_STYLES = {HEADER: CSI + "1m", ATTENTION: CSI + "1;31m"}

QUIT_KEYS = (b"q", b"Q")


class QueueTrend(NamedTuple):
    """One queue's last reading and its sizes over the last ticks (oldest first)."""

    datastore: str
    sample: QueueSample
    sizes: Tuple[int, ...]
    # True when its datastore could not be read this tick: the last reading, kept.
    stale: bool = False


class History(NamedTuple):
    """What the screen shows: the last tick, and each queue's sizes before it."""

    where: str
    interval: float
    queues: Tuple[QueueTrend, ...] = ()
    ticks: int = 0
    # Wall time when the last tick ended; None before the first.
    read_at: Optional[float] = None
    duration: float = 0.0
    errors: Tuple[str, ...] = ()
    notices: Tuple[str, ...] = ()
    ok: bool = True
    several_datastores: bool = False


class Line(NamedTuple):
    text: str
    style: str = PLAIN


class Options(NamedTuple):
    """How the screen is drawn: the latency threshold, and ASCII only when the terminal's
    encoding is not UTF-8."""

    latency: float = DEFAULT_LATENCY_THRESHOLD
    ascii: bool = False
    # False when stdin is not a terminal: no key is read, only Ctrl-C quits.
    keys: bool = True


def record(
    history: History, report: TickReport, now: float, notices: Sequence[str] = (), keep: int = KEPT_TICKS
) -> History:
    """`history` after one more tick: queues in the report's order; a queue gone from the report
    is gone from the screen (its sizes with it). A datastore that could not be read this tick
    keeps its last rows and their sizes, marked stale: a one-tick blip does not wipe the trends."""
    before: Dict[Tuple[str, str, str], Tuple[int, ...]] = {
        (trend.datastore, trend.sample.backend, trend.sample.queue): trend.sizes for trend in history.queues
    }
    queues: List[QueueTrend] = []
    for section, samples, _ in sections(report):
        label = section.label if section is not None else ""
        if not (section.ok if section is not None else report.redis_ok):
            queues.extend(
                trend._replace(stale=True) for trend in history.queues if section is None or trend.datastore == label
            )
            continue
        for sample in samples:
            sizes = before.get((label, sample.backend, sample.queue), ()) + (sample.size,)
            queues.append(QueueTrend(label, sample, sizes[-keep:]))
    return history._replace(
        queues=tuple(queues),
        ticks=history.ticks + 1,
        read_at=now,
        duration=report.duration,
        errors=report.errors,
        notices=tuple(notices),
        ok=report.redis_ok,
        several_datastores=len(report.datastores) > 1,
    )


# --- text that fits the terminal's cells ---------------------------------------------------------


def cells(text: str) -> int:
    """Terminal cells `text` takes: East Asian wide characters two, combining marks none."""
    return sum(_char_cells(char) for char in text)


def _char_cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cut(text: str, width: int, ascii: bool = False) -> str:
    """`text` in at most `width` cells, ending in an ellipsis when cut."""
    if cells(text) <= width:
        return text
    ellipsis = "~" if ascii else "…"
    room = width - 1
    kept, used = [], 0
    for char in text:
        size = _char_cells(char)
        if used + size > room:
            break
        kept.append(char)
        used += size
    return "".join(kept) + ellipsis if width > 0 else ""


def pad(text: str, width: int, right: bool = False, ascii: bool = False) -> str:
    """`text` cut or filled with spaces to exactly `width` cells."""
    text = cut(text, width, ascii)
    fill = " " * (width - cells(text))
    return fill + text if right else text + fill


def display_name(name: str, ascii: bool = False) -> str:
    """A queue name safe to print in a frame: undecodable bytes as \\xNN, control and format
    characters (a newline, ESC, a right-to-left override) escaped, so a name never moves the
    cursor or changes colours; with `ascii`, everything beyond ASCII escaped too."""
    shown = []
    for char in readable_name(name):
        code = ord(char)
        if unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp") or (ascii and code > 126):
            shown.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            shown.append(char)
    return "".join(shown)


# --- figures as short text -----------------------------------------------------------------------


def format_size(size: int) -> str:
    """A size in at most 7 characters: 1234567, 12.3M, 4.5G."""
    if size < 10_000_000:
        return str(max(0, size))
    if size < 10_000_000_000:
        return f"{size / 1e6:.1f}M"
    return f"{size / 1e9:.1f}G"


def format_latency(latency: Optional[float]) -> str:
    """`?` unknown; `3.2 s`; `4m05s`; `2h03m`; `3d04h`."""
    if latency is None:
        return "?"
    seconds = max(0.0, latency)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def sparkline(sizes: Sequence[int], width: int, ascii: bool = False) -> str:
    """The last `width` sizes as bars from 0 to the largest shown: an empty queue is the lowest
    bar, any job at all at least the second, so a queue that is not empty never looks empty."""
    glyphs = SPARK_ASCII if ascii else SPARK_UNICODE
    shown = list(sizes[-width:]) if width > 0 else []
    top = max(shown, default=0)
    levels = len(glyphs) - 1
    bars = "".join(glyphs[0] if size <= 0 else glyphs[max(1, math.ceil(size / top * levels))] for size in shown)
    return bars.rjust(width)


def trend_arrow(sizes: Sequence[int], ascii: bool = False) -> str:
    """↑ grew, ↓ shrank, → unchanged over the last ARROW_TICKS ticks; a space with one tick."""
    if len(sizes) < 2:
        return " "
    then = sizes[-min(len(sizes), ARROW_TICKS + 1)]
    direction = (sizes[-1] > then) - (sizes[-1] < then)
    return (ARROWS_ASCII if ascii else ARROWS_UNICODE)[direction]


def figure_value(sample: QueueSample, name: str) -> Optional[float]:
    for figure in sample.figures:
        if figure.name == name:
            return figure.value
    return None


def attention(sample: QueueSample, latency_threshold: float) -> Tuple[str, ...]:
    """Why a row needs a look, in short words; empty when it needs none."""
    # The most actionable first (a narrow WHY column cuts the end): nobody listening, then jobs
    # stuck before or in the queue, then the latency they cause.
    reasons = []
    if sample.size > 0 and figure_value(sample, "consumers") == 0:
        reasons.append("no worker")
    if (figure_value(sample, "due_age") or 0) > DUE_AGE_LIMIT:
        reasons.append("due late")
    if (figure_value(sample, "running_age") or 0) > RUNNING_AGE_LIMIT:
        reasons.append("long job")
    if sample.latency is not None and sample.latency > latency_threshold:
        reasons.append("latency")
    return tuple(reasons)


def ordered(queues: Sequence[QueueTrend], latency_threshold: float) -> List[Tuple[QueueTrend, Tuple[str, ...]]]:
    """Rows needing attention first (the longest latency first), then queues holding jobs, then
    empty ones; otherwise in the collector's order, so rows do not jump from frame to frame."""
    # A stale row says so first: its figures are the last ones read, not today's.
    rows = [(trend, ("stale",) * trend.stale + attention(trend.sample, latency_threshold)) for trend in queues]

    def key(row: Tuple[QueueTrend, Tuple[str, ...]]) -> Tuple[int, float]:
        trend, reasons = row
        if reasons:
            return (0, -(trend.sample.latency or 0.0))
        return (1 if trend.sample.size > 0 else 2, 0.0)

    return sorted(rows, key=key)


# --- the frame -----------------------------------------------------------------------------------

# Columns beside the queue name, in cells (a space before each).
SIZE_WIDTH = 7
LATENCY_WIDTH = 7
FIGURE_WIDTH = 5
MAX_SYSTEM_WIDTH = 16
MIN_QUEUE_WIDTH = 6
MIN_SPARK = 4
MAX_SPARK = 20
# The figures shown as columns when a queue has them.
FIGURE_COLUMNS = (("running", "RUN"), ("due", "DUE"), ("consumers", "CONS"))
MIN_REASON_WIDTH = 8
MAX_REASON_WIDTH = 24
# The sparkline's length kept when the reasons take the rest of the row.
SPARK_BESIDE_REASON = 8


class Layout(NamedTuple):
    system: int
    queue: int
    spark: int
    figures: Tuple[Tuple[str, str], ...]
    reason: int


def layout(rows: Sequence[Tuple[QueueTrend, Tuple[str, ...]]], width: int, several: bool, ascii: bool) -> Layout:
    """Column widths for `width` cells: the queue name takes what it needs, the sparkline what is
    left (up to MAX_SPARK), then the reasons; narrow terminals lose the figure columns first."""
    systems = [_system_text(trend, several) for trend, _ in rows] or ["SYSTEM"]
    system = min(MAX_SYSTEM_WIDTH, max(len("SYSTEM"), *(cells(text) for text in systems)))
    figures = tuple(
        column
        for column in FIGURE_COLUMNS
        if any(figure_value(trend.sample, column[0]) is not None for trend, _ in rows)
    )
    names = max((cells(display_name(trend.sample.queue, ascii)) for trend, _ in rows), default=0)
    wanted_queue = max(MIN_QUEUE_WIDTH, len("QUEUE"), names)
    while True:
        # marker(2) system queue size latency spark+arrow figures, one space between columns
        fixed = 2 + system + 1 + 1 + SIZE_WIDTH + 1 + LATENCY_WIDTH + 2 + 2 + (FIGURE_WIDTH + 1) * len(figures)
        room = width - fixed
        if room - MIN_SPARK >= MIN_QUEUE_WIDTH or not figures:
            break
        figures = figures[:-1]
    queue = max(1, min(wanted_queue, room - MIN_SPARK))
    left = room - queue
    # The reasons before a long sparkline: "no worker" says more than ten more bars.
    said = max((cells(",".join(reasons)) for _, reasons in rows), default=0)
    reason = min(said, MAX_REASON_WIDTH) if said else 0
    if reason and left - reason - 1 < SPARK_BESIDE_REASON:
        reason = max(0, left - 1 - SPARK_BESIDE_REASON)
        reason = reason if reason >= MIN_REASON_WIDTH else 0
    spark = max(0, min(MAX_SPARK, left - (reason + 1 if reason else 0)))
    if spark < MIN_SPARK:
        spark = 0
    return Layout(system, queue, spark, figures, reason)


def _system_text(trend: QueueTrend, several: bool) -> str:
    return f"{trend.datastore}/{trend.sample.backend}" if several and trend.datastore else trend.sample.backend


def _row(trend: QueueTrend, reasons: Tuple[str, ...], shape: Layout, several: bool, ascii: bool) -> str:
    sample = trend.sample
    parts = [
        ("!" if reasons else " ") + " " + pad(_system_text(trend, several), shape.system, ascii=ascii),
        pad(display_name(sample.queue, ascii), shape.queue, ascii=ascii),
        pad(format_size(sample.size) + ("?" if trend.stale else ""), SIZE_WIDTH, right=True, ascii=ascii),
        pad(format_latency(sample.latency), LATENCY_WIDTH, right=True, ascii=ascii),
    ]
    trend_text = (sparkline(trend.sizes, shape.spark, ascii) + " " if shape.spark else "") + trend_arrow(
        trend.sizes, ascii
    )
    parts.append(" " + trend_text)
    for name, _ in shape.figures:
        value = figure_value(sample, name)
        parts.append(pad("-" if value is None else format_size(int(value)), FIGURE_WIDTH, right=True, ascii=ascii))
    if shape.reason:
        parts.append(cut(",".join(reasons), shape.reason, ascii))
    return " ".join(parts)


def _column_header(shape: Layout, ascii: bool) -> str:
    parts = [
        "  " + pad("SYSTEM", shape.system, ascii=ascii),
        pad("QUEUE", shape.queue, ascii=ascii),
        pad("SIZE", SIZE_WIDTH, right=True, ascii=ascii),
        pad("LATENCY", LATENCY_WIDTH, right=True, ascii=ascii),
        " " + pad("TREND", shape.spark + 2, ascii=ascii),
    ]
    parts.extend(pad(title, FIGURE_WIDTH, right=True, ascii=ascii) for _, title in shape.figures)
    if shape.reason:
        parts.append("WHY")
    return " ".join(parts)


def screen(history: History, width: int, height: int, now: float, options: Optional[Options] = None) -> List[Line]:
    """One frame: at most `height` lines of at most `width` cells each.

    Two header lines (what is read; the time, tick duration, queues and errors), the column
    titles, a row per queue (those needing attention first, highlighted), `… and N more queues`
    when they do not fit, and the last tick's errors and notices at the bottom.
    """
    if width <= 0 or height <= 0:
        return []
    options = options or Options()
    ascii = options.ascii
    dot = " - " if ascii else " · "
    lines = [Line(cut(f"queue-metrics watch{dot}{display_name(history.where, ascii)}", width, ascii), HEADER)]
    status = [time.strftime("%H:%M:%S", time.localtime(now)), f"every {history.interval:g} s"]
    if history.read_at is not None:
        status.append(f"tick {history.duration:.3f} s")
        status.append(f"{len(history.queues)} queues")
        status.append(f"{len(history.errors)} errors")
        if now - history.read_at > 2 * history.interval + 1:
            # The tick is late (a datastore slow to answer): the figures shown are old.
            status.append(f"last read {now - history.read_at:.0f} s ago")
    status.append("q quits" if options.keys else "Ctrl-C quits")
    lines.append(Line(cut(dot.join(status), width, ascii), HEADER))

    # Error lines may quote a server's reply, which may hold anything: escaped as names are.
    bottom = [cut(f"! {display_name(error, ascii)}", width, ascii) for error in history.errors]
    bottom.extend(cut(f"  {display_name(notice, ascii)}", width, ascii) for notice in history.notices)
    if len(bottom) > MAX_BOTTOM_LINES:
        more = len(bottom) - MAX_BOTTOM_LINES + 1
        bottom = bottom[: MAX_BOTTOM_LINES - 1] + [
            cut(f"{'...' if ascii else '…'} and {more} more lines", width, ascii)
        ]
    rows = ordered(history.queues, options.latency)
    shape = layout(rows, width, history.several_datastores, ascii)
    body: List[Line] = [Line(cut(_column_header(shape, ascii), width, ascii), HEADER)]
    if history.read_at is None:
        body.append(Line(cut("reading the queues...", width, ascii)))
    elif not rows:
        body.append(Line(cut("(no queues found)" if history.ok else "(could not be read)", width, ascii)))
    for trend, reasons in rows:
        body.append(
            Line(
                cut(_row(trend, reasons, shape, history.several_datastores, ascii), width, ascii),
                ATTENTION if reasons else PLAIN,
            )
        )

    # Room: the headers first, then the errors (they say why figures are missing), then rows.
    room = height - len(lines)
    if room <= 0:
        return lines[:height]
    bottom = bottom[: max(0, room - 2)]
    space = room - len(bottom)
    if len(body) > space:
        hidden = len(body) - space + 1
        body = body[: space - 1] if space > 1 else []
        queues_hidden = min(hidden, len(rows))
        body.append(Line(cut(f"{'...' if ascii else '…'} and {queues_hidden} more queues", width, ascii)))
    return lines + body + [Line(text) for text in bottom]


def paint(line: Line, width: int, color: bool) -> str:
    """A line as written to the terminal: its style's escape sequence, the text, the rest of the
    row cleared. A line filling the row gets no clear: at the right margin the terminal would
    clear the last character."""
    styles = COLOR_STYLES if color else STYLES
    text = line.text
    if line.style in styles:
        text = f"{styles[line.style]}{text}{RESET}"
    return text if cells(line.text) >= width else text + CLEAR_LINE_END


def frame_text(lines: Sequence[Line], width: int, color: bool) -> str:
    """A whole frame, drawn over the last one in place: the cursor home, each line over the old
    one, everything below cleared. No newline after the last line, so the screen never scrolls."""
    return CURSOR_HOME + "\r\n".join(paint(line, width, color) for line in lines) + CLEAR_BELOW


# --- plain lines (stdout is not a terminal) ------------------------------------------------------


def plain_lines(report: TickReport, now: float) -> List[str]:
    """A line per queue: `2026-12-07T06:19:44Z rq default size=12 latency=3.2s` (the datastore's
    label before the system with several; a queue name that is not a plain word quoted and
    escaped; `latency=?` when unknown)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    several = len(report.datastores) > 1
    lines = []
    for section, samples, _ in sections(report):
        where = f"{section.label} " if several and section is not None else ""
        for sample in samples:
            name = sample.queue
            shown = (
                name
                if name and all(char.isascii() and (char.isalnum() or char in "._:-") for char in name)
                else show_name(name, 200)
            )
            latency = "?" if sample.latency is None else f"{max(0.0, sample.latency):.3f}".rstrip("0").rstrip(".") + "s"
            lines.append(f"{stamp} {where}{sample.backend} {shown} size={sample.size} latency={latency}")
    return lines


# --- the driver: the only code here that touches the tty -----------------------------------------


class KeptNotices(Output):
    """The collector's notices (a long keyspace walk...) kept for the screen's bottom lines: on
    stderr they would be written over the frame."""

    def __init__(self, wrapped: Output) -> None:
        super().__init__()
        self._wrapped = wrapped
        self.notices: List[str] = []

    def hide_secrets(self, text: str) -> str:
        return self._wrapped.hide_secrets(text)

    def err(self, messages: Sequence[str], level: str = "error") -> None:
        self.notices.extend(f"{level}: {self.hide_secrets(message)}" for message in messages)

    def take(self) -> List[str]:
        taken, self.notices = self.notices, []
        return taken


class Terminal:
    """The tty while the view runs: keys read at once (cbreak), the alternate screen, the cursor
    hidden; all of it restored on the way out, whatever ends the view, and around a Ctrl-Z."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdout = stdout
        self.out_fd = stdout.fileno()
        self.in_fd: Optional[int] = stdin.fileno() if stdin.isatty() else None
        # The tty whose modes are set: stdin's, else stdout's (`watch < /dev/null`), so that keys
        # typed at it are not echoed over the frame.
        self._mode_fd = self.in_fd if self.in_fd is not None else self.out_fd
        self._saved: Optional[list] = None
        self._wake: Optional[Tuple[int, int]] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "Terminal":
        import termios

        self._saved = termios.tcgetattr(self._mode_fd)
        # A resize wakes the wait for keys through a pipe: select() is retried after a signal.
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        self._previous = {
            signal.SIGWINCH: signal.signal(signal.SIGWINCH, self._on_resize),
            signal.SIGTSTP: signal.signal(signal.SIGTSTP, self._on_suspend),
        }
        self._take()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A second Ctrl-C or a SIGTERM now would raise StopRequested in the middle of this and
        # leave the tty in cbreak: ignored until the terminal is given back (we are quitting).
        quitting = {signum: signal.signal(signum, signal.SIG_IGN) for signum in StopSignals.SIGNALS}
        try:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            try:
                self._give_back()
            finally:
                if self._wake is not None:
                    for fd in self._wake:
                        os.close(fd)
                    self._wake = None
        finally:
            for signum, handler in quitting.items():
                signal.signal(signum, handler)

    def _take(self) -> None:
        """The tty for the view: cbreak, the alternate screen, no cursor."""
        import tty

        # cbreak, not raw: Ctrl-C still sends SIGINT, Ctrl-Z SIGTSTP, and \n still becomes \r\n.
        tty.setcbreak(self._mode_fd)
        # os.write, not the stream: this also runs in a signal handler, maybe inside a write.
        os.write(self.out_fd, (ALTERNATE_SCREEN_ON + CURSOR_HIDE).encode())

    def _give_back(self) -> None:
        """The tty as it was: the normal screen, the cursor, the saved modes (even if the write
        fails: the terminal may be gone)."""
        import termios

        try:
            os.write(self.out_fd, (RESET + CURSOR_SHOW + ALTERNATE_SCREEN_OFF).encode())
        finally:
            if self._saved is not None:
                # Keys typed at a tty that was never read (stdin not a tty) are dropped, not
                # left for the shell.
                when = termios.TCSADRAIN if self.in_fd is not None else termios.TCSAFLUSH
                termios.tcsetattr(self._mode_fd, when, self._saved)

    def _on_suspend(self, signum: int, frame: object) -> None:
        """Ctrl-Z: the shell gets its screen and modes back, the process stops as it would
        without us; on `fg` the view takes the tty again and redraws at once."""
        self._give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # Stopped here until SIGCONT (`fg`, `bg`); the shell may have changed the modes meanwhile.
        signal.signal(signal.SIGTSTP, self._on_suspend)
        self._take()
        self._on_resize(signum, frame)

    def _on_resize(self, signum: int, frame: object) -> None:
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"w")
            except OSError:  # the pipe is full: a wake-up is already waiting
                pass

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def size(self) -> Tuple[int, int]:
        """Columns and rows now, read from the tty at every frame (so a resize is followed);
        not from COLUMNS/LINES, which say the size when the shell started."""
        try:
            size = os.get_terminal_size(self.out_fd)
        except OSError:
            return FALLBACK_SIZE
        return (size.columns or FALLBACK_SIZE[0], size.lines or FALLBACK_SIZE[1])

    def wait(self, seconds: float) -> str:
        """Up to `seconds` for a key or a resize: "quit", "resize", or "" (the time passed)."""
        watched = [fd for fd in (self.in_fd, self._wake[0] if self._wake else None) if fd is not None]
        ready, _, _ = select.select(watched, [], [], max(0.0, seconds))
        if self._wake is not None and self._wake[0] in ready:
            os.read(self._wake[0], 1024)
            return "resize"
        if self.in_fd is not None and self.in_fd in ready:
            keys = os.read(self.in_fd, 1024)
            if not keys or any(key in keys for key in QUIT_KEYS):
                # No bytes: the terminal is gone; nobody is watching.
                return "quit"
        return ""


def _schedule(
    tick: Callable[[], None],
    wait_until: Callable[[float], object],
    interval: float,
    ticks: Optional[int],
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Tick at once, then on loop.py's fixed grid, `ticks` times (or until stopped)."""
    due = monotonic()
    done = 0
    while True:
        tick()
        done += 1
        if ticks is not None and done >= ticks:
            return
        due = next_due(due, interval, monotonic())
        wait_until(due)


def watch_terminal(
    ticker: Ticker,
    terminal: Terminal,
    where: str,
    interval: float,
    ticks: Optional[int],
    options: Options,
    color: bool,
    stop: StopSignals,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> List[Line]:
    """The live view until `q`, Ctrl-C, SIGTERM or `ticks` ticks; `terminal` already entered.
    Returns the last frame drawn (after `ticks` ticks)."""
    notices = KeptNotices(ticker.output)
    ticker.output = notices
    options = options._replace(keys=terminal.in_fd is not None)
    state = {"history": History(where, interval)}
    frame: List[Line] = []

    def draw() -> None:
        width, height = terminal.size()
        frame[:] = screen(state["history"], width, height, clock(), options)
        text = frame_text(frame, width, color)
        # Never half a frame: a signal cut into an escape sequence would leave the terminal confused.
        with stop.writing():
            terminal.write(text)

    def tick() -> None:
        report = ticker.tick()
        report = report._replace(errors=tuple(notices.hide_secrets(error) for error in report.errors))
        state["history"] = record(state["history"], report, clock(), notices.take())
        draw()

    def sleep(seconds: float) -> None:
        # The keyspace walk's pauses, and the rest until the next tick: keys and resizes answered.
        deadline = monotonic() + seconds
        while True:
            left = deadline - monotonic()
            if left <= 0:
                return
            event = terminal.wait(min(left, 1.0))
            if event == "quit":
                raise StopRequested()
            if event == "resize" or left > 1.0:
                # Every second anyway: the clock in the header moves, a late tick shows its age.
                draw()

    draw()
    _schedule(tick, lambda due: ticker.collector.idle(due, sleep=sleep), interval, ticks, monotonic)
    return frame


def watch_plain(
    ticker: Ticker,
    write: Callable[[Iterable[str]], None],
    interval: float,
    ticks: Optional[int],
    stop: StopSignals,
    clock: Callable[[], float] = time.time,
) -> None:
    """Plain lines every tick (the tick's errors on stderr, as `run` writes them)."""

    def tick() -> None:
        report = ticker.tick()
        with stop.writing():
            if report.errors:
                ticker.output.err(report.errors)
            write(plain_lines(report, clock()))

    _schedule(tick, ticker.idle, interval, ticks)


def run_watch(
    ticker: Ticker,
    stdin: TextIO,
    stdout: TextIO,
    where: str,
    interval: float,
    ticks: Optional[int],
    options: Options,
    color: bool,
    terminal: bool,
) -> None:
    """The view on a terminal, else plain lines; ends quietly on `q`, SIGINT or SIGTERM."""
    stop = StopSignals()
    stop.install()
    try:
        if terminal:
            with Terminal(stdin, stdout) as tty:
                last = watch_terminal(ticker, tty, where, interval, ticks, options, color, stop)
            # `--ticks N` ran out: the last frame stays on the normal screen, where it can be read
            # (the alternate screen is gone with the view).
            with stop.writing():
                stdout.write("".join(line.text.rstrip() + "\n" for line in last))
                stdout.flush()
        else:
            watch_plain(ticker, ticker.output.out, interval, ticks, stop)
    except StopRequested:
        pass
    except BrokenPipeError:
        # Whoever read the lines is gone (`watch | head`): nothing left to write to.
        _silence_stdout()
    finally:
        stop.restore()
