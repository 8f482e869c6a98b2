"""`queue-metrics watch`: the frame as a pure function (fit, order, highlight, sparkline, escaping,
ASCII), the terminal restored on a real pty, and the real command in a real tmux while a real rq
worker drains a backlog; on a pipe, plain lines."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import uuid
from typing import Iterator, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rq import Queue

from helpers.process import command_env
from helpers.workers import HELPERS, wait_for, worker_process
from queue_metrics.loop import StopRequested, StopSignals
from queue_metrics.sample import DatastoreSection, Figure, QueueSample, TickReport
from queue_metrics.watch import (
    ALTERNATE_SCREEN_OFF,
    ALTERNATE_SCREEN_ON,
    ATTENTION,
    CLEAR_BELOW,
    CLEAR_LINE_END,
    CURSOR_HIDE,
    CURSOR_HOME,
    CURSOR_SHOW,
    HEADER,
    PLAIN,
    History,
    Line,
    Options,
    Terminal,
    cells,
    display_name,
    frame_text,
    plain_lines,
    record,
    screen,
    sparkline,
    trend_arrow,
)

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
NOW = 1_800_000_000.0


def report_of(samples, errors=(), datastores: Optional[Tuple[DatastoreSection, ...]] = None) -> TickReport:
    if datastores is None:
        datastores = (
            DatastoreSection("redis", "redis", "redis://localhost:6379/0", "REDIS_URL", True, len(samples), 0, 0),
        )
    return TickReport(tuple(samples), tuple(errors), ("rq",), 0.004, True, datastores=datastores)


def history_of(*ticks, where: str = "redis (redis://localhost:6379/0, from REDIS_URL)") -> History:
    history = History(where, 2.0)
    for index, samples in enumerate(ticks):
        history = record(history, report_of(samples), NOW + 2 * index)
    return history


def rq(queue: str, size: int, latency: Optional[float] = 1.0, **figures: float) -> QueueSample:
    return QueueSample("rq", queue, size, latency, tuple(Figure(name, value) for name, value in figures.items()))


def words(line: Line) -> List[str]:
    """A row's cells as words, without the attention mark: system, queue, size, latency, ..."""
    found = line.text.split()
    return found[1:] if found[:1] == ["!"] else found


def assert_fits(lines: List[Line], width: int, height: int) -> None:
    assert len(lines) <= height
    for line in lines:
        assert cells(line.text) <= width, line.text
        # Nothing in a line moves the cursor or changes colours: the driver adds those alone.
        assert not any(ord(char) < 32 or ord(char) == 127 for char in line.text), repr(line.text)


# --- the frame, pure ----------------------------------------------------------------------------


def many_queues(count: int) -> List[QueueSample]:
    names = ["default", "mailers", "a-very-long-queue-name-" + "x" * 90, "通知キュー", "tab\there", "ünïcödé"]
    return [
        rq(f"{names[index % len(names)]}-{index}", index * 7 % 50, index * 1.5, running=index % 3, consumers=1)
        for index in range(count)
    ]


@pytest.mark.parametrize("width,height", [(80, 24), (40, 10), (132, 50), (20, 5), (200, 3), (80, 1)])
def test_frame_fits_the_terminal_and_counts_the_queues_left_out(width, height):
    samples = many_queues(50)
    history = history_of(samples, samples, [s._replace(size=s.size + 3) for s in samples])
    lines = screen(history, width, height, NOW + 5)
    assert_fits(lines, width, height)
    rows = [line for line in lines[3:] if "more queues" not in line.text]
    if height >= 5:
        (more,) = [line.text for line in lines if "more queues" in line.text]
        hidden = int(re.search(r"and (\d+) more queues", more).group(1))
        assert len(rows) + hidden == 50
        assert lines[-1].text == more  # no error lines: the count is the last row
    assert len(lines) == min(height, 50 + 3)


def test_a_few_queues_fit_80x24_with_every_row_and_the_columns_present():
    history = history_of([rq("default", 3, running=1, due=0, consumers=2), rq("low", 0, 0.0)])
    lines = screen(history, 80, 24, NOW + 1)
    assert_fits(lines, 80, 24)
    assert [line.style for line in lines] == [HEADER, HEADER, HEADER, PLAIN, PLAIN]
    assert lines[0].text.startswith("queue-metrics watch · redis (redis://localhost:6379/0")
    assert "tick 0.004 s · 2 queues · 0 errors · q quits" in lines[1].text
    assert lines[2].text.split() == ["SYSTEM", "QUEUE", "SIZE", "LATENCY", "TREND", "RUN", "DUE", "CONS"]
    assert lines[3].text.split()[:4] == ["rq", "default", "3", "1.0"]
    assert lines[3].text.split()[-3:] == ["1", "0", "2"]
    assert lines[4].text.split()[:4] == ["rq", "low", "0", "0.0"]
    assert lines[4].text.split()[-3:] == ["-", "-", "-"]  # a queue without those figures


@given(
    names=st.lists(st.text(min_size=0, max_size=40), min_size=0, max_size=30),
    width=st.integers(1, 220),
    height=st.integers(1, 70),
    errors=st.lists(st.text(max_size=120), max_size=6),
)
def test_any_names_errors_and_size_fit_and_hold_no_control_character(names, width, height, errors):
    samples = [rq(name, index, None if index % 4 == 0 else index * 10.0) for index, name in enumerate(names)]
    history = record(History("redis", 2.0), report_of(samples, errors), NOW)
    for ascii in (False, True):
        lines = screen(history, width, height, NOW, Options(ascii=ascii))
        assert_fits(lines, width, height)
        if ascii:
            assert all(line.text.isascii() for line in lines)


def test_rows_needing_attention_come_first_highlighted_longest_latency_first():
    samples = [
        rq("calm", 4, 2.0, consumers=1),
        rq("empty", 0, 0.0, consumers=1),
        rq("slow", 9, 45.0, consumers=1),
        rq("slower", 9, 400.0, consumers=1),
        rq("orphan", 3, 1.0, consumers=0),
        rq("orphan-empty", 0, 0.0, consumers=0),  # no jobs: nobody needs to listen
        rq("stuck-due", 0, 0.0, due=5, due_age=90),
        rq("long-job", 0, 0.0, running=1, running_age=700),
        rq("busy", 2, 1.0, running=1, running_age=599, due=1, due_age=59),
    ]
    lines = screen(history_of(samples), 120, 24, NOW)
    rows = lines[3:]
    assert [words(row)[1] for row in rows] == [
        "slower",
        "slow",
        "orphan",
        "stuck-due",
        "long-job",
        "calm",
        "busy",
        "empty",
        "orphan-empty",
    ]
    assert [row.style for row in rows] == [ATTENTION] * 5 + [PLAIN] * 4
    assert all(row.text.startswith("! ") for row in rows[:5]) and not any(row.text.startswith("!") for row in rows[5:])
    why = {words(row)[1]: words(row)[-1] for row in rows[:5]}
    assert why == {
        "slower": "latency",
        "slow": "latency",
        "orphan": "worker",
        "stuck-due": "late",
        "long-job": "job",
    }  # "no worker", "due late", "long job": the last word of the WHY column
    # The threshold is the option's: at 60 s the 45 s queue is calm again.
    relaxed = screen(history_of(samples), 120, 24, NOW, Options(latency=60))
    assert [words(row)[1] for row in relaxed[3:] if row.style == ATTENTION] == [
        "slower",
        "orphan",
        "stuck-due",
        "long-job",
    ]


def test_sparkline_scales_from_zero_to_the_largest_and_keeps_the_last_ticks():
    assert sparkline([0, 1, 2, 4, 8], 5) == "▁▂▃▅█"
    assert sparkline([0, 1, 2, 4, 8], 5, ascii=True) == "_.,=#"
    assert sparkline([0, 1, 2, 4, 8], 7) == "  ▁▂▃▅█"  # fewer ticks than room: right-aligned
    assert sparkline([0, 1, 2, 4, 8], 2) == "▅█"  # the last ones
    assert sparkline([1, 1000], 2) == "▂█"  # one job is never drawn as an empty queue
    assert sparkline([0, 0, 0], 3) == "▁▁▁"
    assert sparkline([5, 5], 2) == "██"
    assert sparkline([3], 0) == ""


def test_arrow_compares_with_a_few_ticks_ago():
    assert trend_arrow([4]) == " "
    assert trend_arrow([1, 2]) == "↑"
    assert trend_arrow([9, 8, 8, 8]) == "↓"
    assert trend_arrow([5, 5, 5]) == "→"
    # Six ticks back: a rise before the last five ticks no longer counts.
    assert trend_arrow([0, 7, 7, 7, 7, 7, 7]) == "→"
    assert [trend_arrow(sizes, ascii=True) for sizes in ([1, 2], [2, 1], [1, 1])] == ["^", "v", "-"]


def test_the_row_shows_the_trend_of_its_queue_over_ticks():
    history = history_of(*[[rq("default", size)] for size in (8, 6, 4, 2, 0)])
    (row,) = screen(history, 80, 24, NOW)[3:]
    assert row.text.endswith(" █▇▅▃▁ ↓")
    assert words(row)[2] == "0"


def test_record_keeps_the_last_ticks_and_drops_queues_that_are_gone():
    history = History("redis", 1.0)
    for size in range(40):
        history = record(
            history, report_of([rq("default", size), rq("temporary", 1)] if size < 39 else [rq("default", size)]), NOW
        )
    assert [trend.sample.queue for trend in history.queues] == ["default"]
    assert history.queues[0].sizes == tuple(range(10, 40))
    assert history.ticks == 40
    # A queue that comes back starts its trend again.
    history = record(history, report_of([rq("temporary", 5)]), NOW)
    assert history.queues[0].sizes == (5,)


def test_the_same_queue_in_two_datastores_is_two_rows_with_their_labels():
    sections = (
        DatastoreSection("redis", "redis", "redis://a/0", "REDIS_URL", True, 1, 0, 0),
        DatastoreSection("pink", "redis", "redis://b/0", "HEROKU_REDIS_PINK_URL", True, 1, 0, 0),
    )
    history = record(History("two", 1.0), report_of([rq("default", 1), rq("default", 2)], datastores=sections), NOW)
    history = record(history, report_of([rq("default", 3), rq("default", 4)], datastores=sections), NOW)
    assert [trend.sizes for trend in history.queues] == [(1, 3), (2, 4)]
    rows = screen(history, 80, 24, NOW)[3:]
    assert [words(row)[:3] for row in rows] == [["redis/rq", "default", "3"], ["pink/rq", "default", "4"]]


def test_odd_queue_names_are_escaped_and_cut_to_fit():
    assert display_name("red\x1b[31m\nx") == "red\\x1b[31m\\x0ax"
    assert display_name("rtl\u202eevil") == "rtl\\u202eevil"  # a right-to-left override
    assert display_name("bad\udcffbyte") == "bad\\xffbyte"  # an undecodable byte, as Redis holds it
    assert display_name("café 通知") == "café 通知"
    assert display_name("café 通知", ascii=True) == "caf\\xe9 \\u901a\\u77e5"
    history = history_of([rq("\x1b]0;pwned\x07" + "y" * 100, 1), rq("通知" * 30, 2)])
    lines = screen(history, 80, 24, NOW)
    assert_fits(lines, 80, 24)
    assert "\\x1b]0;pwned\\x07" in lines[3].text
    assert words(lines[3])[1].endswith("…")
    assert cells(lines[4].text) <= 80 and "通知" in lines[4].text


def test_ascii_fallback_draws_only_ascii():
    history = history_of(*[[rq("défaut", size), rq("x" * 200, 1, 100.0)] for size in (1, 3, 2)])
    lines = screen(history, 80, 24, NOW, Options(ascii=True))
    assert_fits(lines, 80, 24)
    text = "\n".join(line.text for line in lines)
    assert text.isascii()
    assert "d\\xe9faut" in text and " - every 2 s - " in text and "~" in text
    assert "^" in text  # 1 -> 2: up


def test_errors_and_notices_at_the_bottom_a_few_only():
    samples = many_queues(40)
    errors = [f'rq queue "q{index}": latency unknown: the job hash expired' for index in range(5)]
    history = record(History("redis", 2.0), report_of(samples, errors), NOW, notices=["info: walking the keyspace"])
    lines = screen(history, 80, 24, NOW)
    assert_fits(lines, 80, 24)
    assert [line.text for line in lines[-3:]] == [
        '! rq queue "q0": latency unknown: the job hash expired',
        '! rq queue "q1": latency unknown: the job hash expired',
        "… and 4 more lines",
    ]
    assert "5 errors" in lines[1].text
    assert "more queues" in lines[-4].text
    assert len(lines) == 24


def test_before_the_first_tick_and_with_nothing_found():
    assert screen(History("redis", 2.0), 80, 24, NOW)[-1].text == "reading the queues..."
    assert screen(history_of([]), 80, 24, NOW)[-1].text == "(no queues found)"
    down = record(History("redis", 2.0), TickReport((), ("cannot connect",), (), 1.0, False), NOW)
    assert [line.text for line in screen(down, 80, 24, NOW)[-2:]] == ["(could not be read)", "! cannot connect"]
    # A tick long overdue says how old the figures are.
    assert "last read 30 s ago" in screen(history_of([rq("a", 1)]), 80, 24, NOW + 30)[1].text


def test_the_frame_is_drawn_in_place_without_scrolling():
    lines = [Line("title", HEADER), Line("x" * 10, ATTENTION), Line("short")]
    text = frame_text(lines, 10, color=False)
    assert text.startswith(CURSOR_HOME) and text.endswith(CLEAR_BELOW)
    assert text.count("\n") == 2 and text.count("\r\n") == 2  # no newline after the last line
    # A line filling the row is not followed by a clear (it would erase its last character).
    assert f"\x1b[7m{'x' * 10}\x1b[0m\r\n" in text
    assert f"short{CLEAR_LINE_END}" in text and f"\x1b[1mtitle\x1b[0m{CLEAR_LINE_END}" in text
    assert "\x1b[1;31m" in frame_text(lines, 10, color=True)


def test_plain_lines_one_per_queue():
    report = report_of([rq("default", 12, 3.25), rq("odd name\n", 0, None)])
    assert plain_lines(report, NOW) == [
        "2027-01-15T08:00:00Z rq default size=12 latency=3.25s",
        '2027-01-15T08:00:00Z rq "odd name\\n" size=0 latency=?',
    ]


def test_without_keys_the_header_says_ctrl_c_quits():
    history = history_of([rq("default", 1)])
    assert screen(history, 80, 24, NOW)[1].text.endswith(" · q quits")
    assert screen(history, 80, 24, NOW, Options(keys=False))[1].text.endswith(" · Ctrl-C quits")


def test_a_datastore_not_read_this_tick_keeps_its_rows_marked_stale_and_their_trend():
    sections = (
        DatastoreSection("redis", "redis", "redis://a/0", "REDIS_URL", True, 1, 0, 0),
        DatastoreSection("pink", "redis", "redis://b/0", "HEROKU_REDIS_PINK_URL", True, 1, 0, 0),
    )
    failed = (sections[0], sections[1]._replace(ok=False, queues=0))
    history = History("two", 1.0)
    for size in (1, 2):
        history = record(history, report_of([rq("default", size), rq("low", 10 * size)], datastores=sections), NOW)
    history = record(history, report_of([rq("default", 3)], ["pink: cannot connect"], datastores=failed), NOW)
    assert [(t.datastore, t.sample.queue, t.sizes, t.stale) for t in history.queues] == [
        ("redis", "default", (1, 2, 3), False),
        ("pink", "low", (10, 20), True),
    ]
    rows = screen(history, 80, 24, NOW)[3:-1]
    (stale,) = [row for row in rows if "pink/rq" in row.text]
    assert words(stale)[:3] == ["pink/rq", "low", "20?"] and words(stale)[-1] == "stale"
    assert stale.style == ATTENTION
    # Read again: the trend goes on where it stopped, no longer stale.
    history = record(history, report_of([rq("default", 4), rq("low", 30)], datastores=sections), NOW)
    assert [(t.sizes, t.stale) for t in history.queues] == [((1, 2, 3, 4), False), ((10, 20, 30), False)]
    # A tick that failed as a whole (no datastore in the report) keeps every row.
    down = record(history, TickReport((), ("the tick failed",), (), 0.0, False), NOW)
    assert [(t.sizes, t.stale) for t in down.queues] == [((1, 2, 3, 4), True), ((10, 20, 30), True)]


def test_at_80_columns_the_why_column_starts_with_the_most_actionable_reason():
    name = "orders-" + "x" * 19  # 26 characters
    samples = [rq(name, 5, 400.0, consumers=0), rq(name[:-1] + "y", 5, 400.0, consumers=1)]
    rows = screen(history_of(samples), 80, 24, NOW)[3:]
    assert_fits(rows, 80, 24)
    # "no worker" says what to do; the latency it causes comes after, cut when there is no room.
    assert rows[0].text.endswith(" 0 no worker…") and rows[1].text.endswith(" 1 latency")
    assert screen(history_of(samples), 200, 24, NOW)[3].text.endswith(" 0 no worker,latency")


# --- the terminal, for real ---------------------------------------------------------------------


def test_the_terminal_is_restored_when_the_view_fails():
    """On a real pty: an exception inside the view still leaves cbreak, the alternate screen and
    the hidden cursor."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # rows, columns
    try:
        with open(slave, "w", closefd=False) as out, open(slave, "r", closefd=False) as inp:
            before = termios.tcgetattr(slave)
            with pytest.raises(RuntimeError):
                with Terminal(inp, out) as terminal:
                    during = termios.tcgetattr(slave)
                    size = terminal.size()
                    raise RuntimeError("a defect")
            after = termios.tcgetattr(slave)
        written = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert size == (100, 30)  # read from the tty itself
    assert during[3] & termios.ICANON == 0 and during[3] & termios.ECHO == 0
    assert after == before
    assert written.startswith(ALTERNATE_SCREEN_ON + CURSOR_HIDE)
    assert written.endswith(CURSOR_SHOW + ALTERNATE_SCREEN_OFF)


def start_worker(url: str, *queues: str):
    return worker_process(
        [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--url", url, "--path", HELPERS, *queues], {}
    )


class Tmux:
    """A tmux server of our own (its own socket), 80x24, running a plain shell."""

    PROMPT = "ready$ "

    def __init__(self, env: dict) -> None:
        self.socket = f"qm-watch-{uuid.uuid4().hex[:10]}"
        self.env = env
        # No status line: all 24 rows are the pane's.
        self.run("new-session", "-d", "-x", "80", "-y", "24", "-s", "watch", "sh", ";", "set-option", "status", "off")
        assert self.flag("pane_width") + "x" + self.flag("pane_height") == "80x24"

    def run(self, *arguments: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *arguments],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout

    def type(self, line: str) -> None:
        self.run("send-keys", "-t", "watch", "-l", line)
        self.run("send-keys", "-t", "watch", "Enter")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "watch", *keys)

    def capture(self) -> List[str]:
        return self.run("capture-pane", "-p", "-t", "watch").splitlines()

    def flag(self, name: str) -> str:
        return self.run("display-message", "-p", "-t", "watch", f"#{{{name}}}").strip()

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True, timeout=30)


@pytest.fixture
def tmux(redis_url) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is needed (Debian package tmux)"
    server = Tmux(
        command_env(REDIS_URL=redis_url, PYTHONPATH=LIB, LANG="C.UTF-8", QM=f"{sys.executable} -m queue_metrics")
    )
    try:
        # sh takes no prompt from the environment: set one we know, on a cleared screen.
        server.type(f"PS1='{Tmux.PROMPT}'; clear")
        wait_for(lambda: server.capture()[0] == Tmux.PROMPT.rstrip(), "the shell's prompt")
        yield server
    finally:
        server.kill()


# Typed into the pane's shell: short, so the command line fits in 80 columns wherever the
# checkout (and its venv's python, in $QM) lies.
WATCH = "$QM watch --interval 1"


def row_size(screen_lines: List[str], queue: str) -> Optional[int]:
    for line in screen_lines:
        words = line.split()
        if len(words) > 3 and words[0] in ("!", "rq") and queue in words:
            return int(words[words.index(queue) + 1])
    return None


def test_watch_in_tmux_follows_a_worker_draining_the_backlog_and_q_leaves_a_clean_shell(tmux, redis_url, client):
    queue = Queue("default", connection=client)
    for _ in range(6):
        queue.enqueue("rq_jobs.nap", 0.7)
    Queue("other", connection=client).enqueue("rq_jobs.quick")

    tmux.type(WATCH)
    wait_for(lambda: row_size(tmux.capture(), "default") == 6, "the view to show the backlog", 60)
    assert tmux.flag("alternate_on") == "1" and tmux.flag("cursor_flag") == "0"
    first = tmux.capture()
    assert first[0].startswith("queue-metrics watch · redis (redis://127.0.0.1:")
    assert "2 queues · 0 errors · q quits" in first[1]
    assert row_size(first, "other") == 1
    assert len(first) == 24 and all(cells(line) <= 80 for line in first)

    seen = [6]
    with start_worker(redis_url, "default", "other"):

        def drained() -> bool:
            size = row_size(tmux.capture(), "default")
            if size is not None and size != seen[-1]:
                seen.append(size)
            return size == 0

        wait_for(drained, "the view to show the queue drained", 120)
    # The sizes only fell (nobody enqueues), over several frames, to zero.
    assert seen == sorted(seen, reverse=True) and len(seen) >= 3 and seen[-1] == 0, seen
    last = tmux.capture()
    assert "▁ ↓" in next(line for line in last if " default " in line)

    tmux.keys("q")
    # The screen as it was before the view: the command line, then the shell's next prompt.
    wait_for(lambda: shown(tmux) == [f"{Tmux.PROMPT}{WATCH}", Tmux.PROMPT.rstrip()], "the shell's prompt again")
    assert tmux.flag("alternate_on") == "0"
    tmux.type("echo status=$?")
    wait_for(lambda: any(line.startswith("status=") for line in tmux.capture()), "the status line")
    assert shown(tmux) == [f"{Tmux.PROMPT}{WATCH}", f"{Tmux.PROMPT}echo status=$?", "status=0", Tmux.PROMPT.rstrip()]
    assert tmux.flag("cursor_flag") == "1"
    assert termios_is_cooked(tmux)


def column_titles(tmux: Tmux) -> str:
    return next(line for line in tmux.capture() if line.lstrip().startswith("SYSTEM")).rstrip()


def shown(tmux: Tmux) -> List[str]:
    return [line for line in tmux.capture() if line.strip()]


def termios_is_cooked(tmux: Tmux) -> bool:
    """The pane's tty echoes and reads lines again: `stty -a` says icanon and echo."""
    tmux.type("stty -a | tr ' ' '\\n' | grep -x -E -e '-?(icanon|echo)' | tr '\\n' ' '; echo")
    wait_for(lambda: any("icanon" in line and not line.startswith(Tmux.PROMPT) for line in tmux.capture()), "stty")
    (line,) = [line for line in tmux.capture() if "icanon" in line and not line.startswith(Tmux.PROMPT)]
    return line.split() == ["icanon", "echo"]


def test_ctrl_c_ends_the_view_with_status_0_and_a_clean_terminal(tmux, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    tmux.type(WATCH)
    wait_for(lambda: row_size(tmux.capture(), "default") == 1, "the view", 60)
    narrow = column_titles(tmux)
    # A wider terminal: the next frame is laid out for it (a longer sparkline).
    tmux.run("resize-window", "-t", "watch", "-x", "120", "-y", "30")
    wait_for(lambda: cells(column_titles(tmux)) > cells(narrow), "the frame laid out for 120 columns")
    assert len(tmux.capture()) == 30
    tmux.keys("C-c")
    wait_for(lambda: shown(tmux) == [f"{Tmux.PROMPT}{WATCH}", Tmux.PROMPT.rstrip()], "the shell's prompt again")
    assert tmux.flag("alternate_on") == "0"
    tmux.type("echo status=$?")
    wait_for(lambda: any(line.startswith("status=") for line in tmux.capture()), "the status line")
    assert "status=0" in tmux.capture()
    assert tmux.flag("cursor_flag") == "1"
    assert termios_is_cooked(tmux)


def test_on_a_pipe_plain_lines_for_a_given_number_of_ticks(redis_url, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    for _ in range(3):
        Queue("low", connection=client).enqueue("rq_jobs.quick")
    process = subprocess.run(
        [sys.executable, "-m", "queue_metrics", "watch", "--interval", "0.5", "--ticks", "3"],
        env=command_env(REDIS_URL=redis_url, PYTHONPATH=LIB),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert b"\x1b" not in process.stdout and b"\x1b" not in process.stderr
    lines = process.stdout.decode().splitlines()
    assert len(lines) == 6
    pattern = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rq (default size=1|low size=3) latency=\d+(\.\d+)?s\Z")
    assert all(pattern.match(line) for line in lines), lines
    assert [line.split()[2] for line in lines] == ["default", "low"] * 3


def test_on_a_pipe_sigterm_ends_it_with_status_0(redis_url, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    process = subprocess.Popen(
        [sys.executable, "-m", "queue_metrics", "watch", "--interval", "0.5"],
        env=command_env(REDIS_URL=redis_url, PYTHONPATH=LIB),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = process.stdout.readline()
        assert b" rq default size=1 " in first
        process.terminate()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert err == b""
    assert all(line.startswith(b"20") for line in out.splitlines())


def test_a_second_signal_during_the_cleanup_still_restores_the_tty(monkeypatch):
    """On a real pty: a Ctrl-C landing in Terminal.__exit__ (here: just as it closes its wake-up
    pipe) neither skips the rest of the cleanup nor escapes from it."""
    master, slave = pty.openpty()
    stop = StopSignals()
    stop.install()
    real_close = os.close
    closed: List[int] = []

    def close_then_interrupt(fd: int) -> None:
        real_close(fd)
        closed.append(fd)
        os.kill(os.getpid(), signal.SIGINT)

    try:
        with open(slave, "w", closefd=False) as out, open(slave, "r", closefd=False) as inp:
            before = termios.tcgetattr(slave)
            with pytest.raises(StopRequested):  # the first Ctrl-C ends the view
                with Terminal(inp, out) as terminal:
                    wake = terminal._wake
                    monkeypatch.setattr(os, "close", close_then_interrupt)
                    raise StopRequested()
            monkeypatch.undo()
            after = termios.tcgetattr(slave)
    finally:
        monkeypatch.undo()
        stop.restore()
        os.close(master)
        os.close(slave)
    assert after == before
    assert wake is not None and closed == list(wake)  # both ends of the pipe, nothing leaked


def test_term_dumb_gets_plain_lines_on_a_terminal(redis_url, client):
    """On a real pty with TERM=dumb (Emacs' shell): no cursor addressing, no alternate screen."""
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "queue_metrics", "watch", "--interval", "0.5", "--ticks", "2"],
            env=command_env(REDIS_URL=redis_url, PYTHONPATH=LIB, TERM="dumb", LANG="C.UTF-8"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        written = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process and its pty are gone
                break
            if not chunk:
                break
            written += chunk
        assert process.wait(timeout=30) == 0, written
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert b"\x1b" not in written, written
    lines = written.decode().splitlines()
    assert len(lines) == 2 and all(re.match(r"\d{4}-\S+Z rq default size=1 latency=", line) for line in lines), lines


def test_ctrl_z_gives_the_shell_its_screen_and_fg_brings_the_view_back_with_q_working(tmux, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    tmux.type(WATCH)
    wait_for(lambda: row_size(tmux.capture(), "default") == 1, "the view", 60)
    tmux.keys("C-z")
    wait_for(
        lambda: any("Stopped" in line for line in tmux.capture()) and shown(tmux)[-1] == Tmux.PROMPT.rstrip(),
        "the shell's Stopped line and its prompt",
    )
    # On the normal screen, below the command line, with the cursor shown.
    assert tmux.flag("alternate_on") == "0" and tmux.flag("cursor_flag") == "1"
    assert shown(tmux)[0] == f"{Tmux.PROMPT}{WATCH}"
    tmux.type("fg")
    wait_for(lambda: tmux.flag("alternate_on") == "1", "the alternate screen again")
    wait_for(lambda: row_size(tmux.capture(), "default") == 1, "the frame again")
    assert tmux.flag("cursor_flag") == "0"
    tmux.keys("q")  # no Enter: the keys are read one by one again
    wait_for(lambda: tmux.flag("alternate_on") == "0" and shown(tmux)[-1] == Tmux.PROMPT.rstrip(), "the prompt")
    tmux.type("echo status=$?")
    wait_for(lambda: "status=0" in tmux.capture(), "the status line")
    assert tmux.flag("cursor_flag") == "1"
    assert termios_is_cooked(tmux)


def test_with_stdin_not_a_terminal_ctrl_c_quits_and_keys_do_not_echo(tmux, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    tmux.type(f"{WATCH} < /dev/null")
    wait_for(lambda: row_size(tmux.capture(), "default") == 1, "the view", 60)
    assert tmux.capture()[1].rstrip().endswith(" · Ctrl-C quits")
    # The pane's tty itself (stdout's): no echo, no line editing while the view runs.
    modes = subprocess.run(
        ["stty", "-F", tmux.flag("pane_tty"), "-a"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert "-echo" in modes and "-icanon" in modes
    tmux.keys("C-c")
    # The command line is longer than the pane: it wraps.
    wait_for(lambda: shown(tmux)[-1] == Tmux.PROMPT.rstrip() and tmux.flag("alternate_on") == "0", "the prompt")
    assert "".join(shown(tmux)[:-1]) == f"{Tmux.PROMPT}{WATCH} < /dev/null"
    assert termios_is_cooked(tmux)


def test_with_ticks_the_last_frame_stays_on_the_normal_screen(tmux, client):
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    command = f"{WATCH} --ticks 2"
    tmux.type(command)
    wait_for(lambda: shown(tmux)[-1:] == [Tmux.PROMPT.rstrip()] and len(shown(tmux)) > 2, "the prompt again", 60)
    assert tmux.flag("alternate_on") == "0"
    lines = shown(tmux)
    assert lines[0] == f"{Tmux.PROMPT}{command}"
    assert lines[1].startswith("queue-metrics watch · redis (redis://127.0.0.1:")
    assert "1 queues · 0 errors · q quits" in lines[2]
    assert lines[3].split()[:2] == ["SYSTEM", "QUEUE"] and row_size(lines, "default") == 1
    assert len(lines) == 6 and not any("\x1b" in line for line in lines)
