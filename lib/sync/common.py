"""What both sync workflows share: flags, the run lock, progress, the report and its exit code.

The OME and vCenter syncs differ only in how they fetch and what they send; everything an
operator sees around that (report, --json, --dry-run, --output, --check, lock, exit codes) is here.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from lib.errors import AgentError, ConfigError, exit_code_for
from lib.logs import redact

if TYPE_CHECKING:
    from lib.sync.delivery import DeliveryResult

log = logging.getLogger(__name__)
T = TypeVar("T")


def add_sync_arguments(parser: argparse.ArgumentParser, *, batch_default: str) -> None:
    group = parser.add_argument_group("sync options")
    group.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    group.add_argument("--dry-run", action="store_true", help="fetch and normalise, but send nothing to DSM")
    group.add_argument("--output", metavar="FILE", help="also write the normalised records to FILE as JSON")
    group.add_argument("--check", action="store_true", help="check configuration and connectivity, then exit")
    group.add_argument(
        "--lock-file", metavar="PATH", help="lock file that stops overlapping runs (default: in the temp dir)"
    )
    group.add_argument("--wait-lock", action="store_true", help="wait for a running sync instead of exiting")
    group.add_argument("--batch-size", type=int, metavar="N", help=f"records per request ({batch_default})")


@dataclass
class Item:
    """One record that was skipped or failed, and why."""

    ident: str
    reason: str


@dataclass
class SyncReport:
    source: str
    seen: int = 0
    sent: int = 0
    new: int = 0
    updated: int = 0
    auto_linked: int = 0
    skipped: list[Item] = field(default_factory=list)
    failed: list[Item] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    elapsed_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when a fatal error ended the run (the report says what was saved)

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "partial" if self.partial else "success"

    def exit_code(self) -> int:
        """0 when everything fetched was saved (or deliberately skipped), 1 when some items failed."""
        return 1 if self.failed else 0

    def absorb(self, result: DeliveryResult[Any], ident: Callable[[Any], str]) -> None:
        """Add what one delivery achieved (also a delivery cut short by a fatal error): the one way
        both syncs fill their report. `ident` names a record for the failed/skipped lists."""
        self.sent += result.sent
        self.new += result.new
        self.updated += result.updated
        self.auto_linked += result.auto_linked
        self.failed.extend(Item(ident(r.item), r.reason) for r in result.failed)
        self.skipped.extend(Item(ident(r.item), r.reason) for r in result.duplicates)
        self.failed.extend(Item("(backend)", e) for e in result.item_errors)
        self.requests["dsm"] = self.requests.get("dsm", 0) + result.requests
        self.extra["isolation_requests"] = self.extra.get("isolation_requests", 0) + result.split_requests

    def fail(self, exc: BaseException) -> None:
        """Mark the run failed with a one-line, secret-free description of `exc`."""
        if isinstance(exc, AgentError):
            self.error = redact(exc.message)
        elif isinstance(exc, KeyboardInterrupt):
            self.error = "interrupted"
        else:
            self.error = f"unexpected {type(exc).__name__}: {redact(str(exc))}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        return data

    def render_text(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        # the error itself follows on its own line (cli.run prints it); the JSON report carries it
        ended = "FAILED after" if self.error is not None else "finished in"
        lines = [
            f"{self.source} sync {'(dry run) ' if self.dry_run else ''}{ended} {self.elapsed_seconds:.1f} s: "
            f"{self.seen} seen, {verb} {self.sent}, {self.new} new, {self.updated} updated, "
            f"{self.auto_linked} linked, {len(self.skipped)} skipped, {len(self.failed)} failed"
        ]
        for item in self.skipped:
            lines.append(f"  skipped {item.ident}: {item.reason}")
        for item in self.failed:
            lines.append(f"  FAILED  {item.ident}: {item.reason}")
        return "\n".join(lines)


class LockBusy(AgentError):
    """Another run holds the lock; not an error for cron (exit 0), only a line saying so."""


class RunLock:
    """An flock on a file, released by the kernel even when the process is killed.

    The default path is in the shared temp dir, where another user could plant a symlink or a
    hard link to one of our files: the file is opened without following a symlink, must be a
    regular file with one link owned by us, and is never truncated (the pid is written in place,
    padded to a fixed width, so it always covers what an earlier run wrote)."""

    PID_WIDTH = 11  # "%10d\n": wider than any Linux pid (at most 4194304)

    def __init__(self, path: str | Path, *, wait: bool = False) -> None:
        self.path = Path(path)
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise ConfigError(
                f"Cannot open the lock file {self.path}: {why}.",
                hint="Use --lock-file with a path this user can write (not a link).",
            ) from None
        try:
            self._check_own_file(fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(
                    f"Another sync is already running (lock {self.path} is held); nothing to do.",
                    hint="Use --wait-lock to wait for it instead.",
                ) from None
            raise
        try:
            os.pwrite(fd, f"{os.getpid():>{self.PID_WIDTH - 1}}\n".encode(), 0)
        except OSError as exc:  # the pid is only for an operator's eyes: the flock is the lock
            log.debug("could not write the pid into %s: %s", self.path, exc)
        self._fd = fd
        return self

    def _check_own_file(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            raise ConfigError(
                f"Refusing the lock file {self.path}: it is not a regular file of this user with a "
                "single link (someone else's file, or a hard link to one).",
                hint="Remove it, or use --lock-file with a path in a directory only this user can write.",
            )

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def default_lock_path(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"dsm-{name}.lock"


class Progress:
    """A one-line progress counter on stderr, only when stderr is a terminal (never under cron)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        of = f" of {total}" if total else ""
        self.stream.write(f"\r{self.label}: {done}{of}")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_output(path: str, records: Any) -> None:
    """Write records (any JSON value) atomically, so a reader never sees half a file."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(records, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
    os.replace(tmp, target)


def emit_report(report: SyncReport, *, as_json: bool) -> None:
    """JSON on stdout when asked; otherwise the text summary goes to the log (stderr)."""
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, default=str), flush=True)
    else:
        level = logging.ERROR if report.error else logging.WARNING if report.partial else logging.INFO
        for line in report.render_text().splitlines():
            log.log(level, "%s", line)


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""
    code: int = 0


class Checklist:
    """`--check`: run each named check, print one OK/FAIL line each, exit non-zero on any FAIL."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.results: list[CheckResult] = []

    def run(self, name: str, fn: Callable[[], str | None]) -> bool:
        try:
            detail = fn() or ""
            result = CheckResult(name, True, detail)
        except AgentError as exc:
            result = CheckResult(name, False, exc.message, exc.hint, exit_code_for(exc))
        self.results.append(result)
        mark = "OK  " if result.ok else "FAIL"
        self.stream.write(f"{mark} {name}" + (f": {result.detail}" if result.detail else "") + "\n")
        if result.hint and not result.ok:
            self.stream.write(f"     hint: {result.hint}\n")
        self.stream.flush()
        return result.ok

    def skip(self, name: str, why: str) -> None:
        self.results.append(CheckResult(name, False, f"skipped: {why}"))
        self.stream.write(f"SKIP {name}: {why}\n")

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def exit_code(self) -> int:
        """0 when every check passed, else the exit code of the first failure's error kind."""
        for result in self.results:
            if not result.ok:
                return result.code or 1
        return 0


def run_sync(
    args: argparse.Namespace, *, name: str, report: SyncReport, work: Callable[[SyncReport], None]
) -> int:
    """The shared skeleton: take the lock, run the work, time it, print the report, pick the exit code.

    `work` fills `report` as it goes. A fatal error half-way (auth, connection, Ctrl-C) still emits
    the report, with status "failed", the error and what was already saved, before the error goes
    on to cli.run, which prints it and exits with its code.
    """
    lock_path = args.lock_file or default_lock_path(name)
    started = time.monotonic()
    try:
        with RunLock(lock_path, wait=args.wait_lock):
            try:
                work(report)
            except BaseException as exc:
                report.elapsed_seconds = round(time.monotonic() - started, 3)
                report.fail(exc)
                emit_report(report, as_json=args.json)
                raise
            report.elapsed_seconds = round(time.monotonic() - started, 3)
    except LockBusy as exc:
        log.warning("%s", exc.message)
        return 0
    emit_report(report, as_json=args.json)
    return report.exit_code()
