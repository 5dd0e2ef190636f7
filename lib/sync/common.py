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
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from lib.errors import AgentError, ConfigError, exit_code_for

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

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    def exit_code(self) -> int:
        """0 when everything fetched was saved (or deliberately skipped), 1 when some items failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = "partial" if self.partial else "success"
        return data

    def render_text(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        lines = [
            f"{self.source} sync {'(dry run) ' if self.dry_run else ''}finished in {self.elapsed_seconds:.1f} s: "
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
    """An flock on a file, released by the kernel even when the process is killed."""

    def __init__(self, path: str | Path, *, wait: bool = False) -> None:
        self.path = Path(path)
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"Cannot open the lock file {self.path}: {exc.strerror}.",
                hint="Use --lock-file with a path this user can write.",
            ) from None
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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

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
        print(json.dumps(report.to_dict(), ensure_ascii=False, default=str))
    else:
        level = logging.WARNING if report.partial else logging.INFO
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

    `work` fills `report` as it goes, so a failure half-way still reports what was saved.
    """
    lock_path = args.lock_file or default_lock_path(name)
    started = time.monotonic()
    try:
        with RunLock(lock_path, wait=args.wait_lock):
            try:
                work(report)
            finally:
                report.elapsed_seconds = round(time.monotonic() - started, 3)
    except LockBusy as exc:
        log.warning("%s", exc.message)
        return 0
    emit_report(report, as_json=args.json)
    return report.exit_code()
