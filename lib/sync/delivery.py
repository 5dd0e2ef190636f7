"""Generic batch delivery: send records in batches, de-duplicate, and isolate the bad ones.

A sink like DSM's openmanage-sync upserts a whole batch in one statement, so one conflicting
record fails the whole batch. `deliver` splits a failed batch in halves, recursively, until the
failing records stand alone: every other record is saved and each bad one is reported with the
backend's message. Whether a batch failed is the caller's judgement (`send_batch` returns a
`BatchOutcome`), because each sink signals it differently (the OME sync: HTTP 200 with a
"Bulk upsert failed:" error entry).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger(__name__)
T = TypeVar("T")

# When this many single records failed with the same message and nothing at all has been saved
# yet, the backend is failing everything (not one record): stop probing it record by record.
# Any success disarms it, so many bad records next to each other are still isolated one by one.
SAME_FAILURE_LIMIT = 16


@dataclass
class BatchOutcome:
    """What one request achieved: ok (with counts) or failed as a whole (with the reason)."""

    ok: bool
    message: str = ""
    new: int = 0
    updated: int = 0
    auto_linked: int = 0
    item_errors: list[str] = field(default_factory=list)  # errors for single records of a saved batch

    @classmethod
    def failed(cls, message: str) -> BatchOutcome:
        return cls(ok=False, message=message)


@dataclass
class Rejected(Generic[T]):
    item: T
    reason: str


@dataclass
class DeliveryResult(Generic[T]):
    sent: int = 0  # records handed to a successful request
    new: int = 0
    updated: int = 0
    auto_linked: int = 0
    requests: int = 0
    batches: int = 0
    split_requests: int = 0  # extra requests spent isolating bad records
    failed: list[Rejected[T]] = field(default_factory=list)
    duplicates: list[Rejected[T]] = field(default_factory=list)
    item_errors: list[str] = field(default_factory=list)

    @property
    def saved(self) -> int:
        return self.sent


class _Delivery(Generic[T]):
    def __init__(self, send_batch: Callable[[list[T]], BatchOutcome], result: DeliveryResult[T]) -> None:
        self.send_batch = send_batch
        self.result = result
        self._last_single: str | None = None
        self._same_in_a_row = 0
        self._any_success = False
        self._lock = threading.Lock()  # batches may be sent from several threads

    def send(self, batch: list[T], *, split: bool = False) -> None:
        with self._lock:
            if self._same_in_a_row >= SAME_FAILURE_LIMIT and not self._any_success:
                reason = f"not sent: the backend failed every record ({self._last_single})"
                self.result.failed.extend(Rejected(item, reason) for item in batch)
                return
        outcome = self.send_batch(batch)
        with self._lock:
            self.result.requests += 1
            self.result.split_requests += int(split)
            if outcome.ok:
                self._any_success = True
                self.result.sent += len(batch)
                self.result.new += outcome.new
                self.result.updated += outcome.updated
                self.result.auto_linked += outcome.auto_linked
                self.result.item_errors.extend(outcome.item_errors)
                return
            if len(batch) == 1:
                self._note_single_failure(outcome.message)
                self.result.failed.append(Rejected(batch[0], outcome.message))
                return
        log.info(
            "a batch of %d failed (%s): splitting it to isolate the bad record(s)",
            len(batch),
            outcome.message,
        )
        middle = len(batch) // 2
        self.send(batch[:middle], split=True)
        self.send(batch[middle:], split=True)

    def _note_single_failure(self, message: str) -> None:
        if message == self._last_single:
            self._same_in_a_row += 1
        else:
            self._last_single, self._same_in_a_row = message, 1


def deliver(
    items: Iterable[T],
    send_batch: Callable[[list[T]], BatchOutcome],
    *,
    batch_size: int,
    key: Callable[[T], Hashable] | None = None,
    group: Callable[[T], Hashable] | None = None,
    on_batch: Callable[[DeliveryResult[T]], None] | None = None,
    workers: int = 1,
    result: DeliveryResult[T] | None = None,
) -> DeliveryResult[T]:
    """Send `items` (consumed lazily) in batches of `batch_size`.

    Within a batch, a record whose `key` repeats an earlier one's is not sent (a single upsert
    cannot touch one row twice) and is listed in `duplicates`; the first one is kept.
    Records whose `group` differs never share a batch: the OME sync groups by the set of keys a
    device carries, because a bulk upsert takes the union of a batch's keys and NULLs the missing
    ones (PostgREST), which would blank stored values of the devices that left a key out.
    With `workers` > 1, up to that many batches are in flight at once (the backend's wait overlaps
    with reading the source); at most `workers` batches are held, so memory stays bounded.
    `result` (optional) is filled as batches complete, so a caller still has the counts of what
    was saved when the source or a request raises half-way.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError("batch_size and workers must be at least 1")
    result = result if result is not None else DeliveryResult()
    delivery = _Delivery(send_batch, result)
    # one open batch per group (a single one without `group`), each with its own duplicate check
    open_batches: dict[Hashable, tuple[list[T], dict[Hashable, T]]] = {}
    pool = None
    pending: list[Future[None]] = []
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver")

    def flush(batch: list[T]) -> None:
        result.batches += 1
        if pool is None:
            delivery.send(batch)
        else:
            while len(pending) >= workers:
                pending.pop(0).result()  # re-raises a fatal error (auth, backend gone)
            pending.append(pool.submit(delivery.send, batch))
        if on_batch is not None:
            on_batch(result)

    # The pool is shut down whatever happens (the source raising, Ctrl-C, a fatal reply): batches
    # not yet started are cancelled, so nothing keeps sending after the run has ended.
    try:
        for item in items:
            g = group(item) if group is not None else None
            batch, keys = open_batches.setdefault(g, ([], {}))
            if key is not None:
                k = key(item)
                if k in keys:
                    result.duplicates.append(Rejected(item, f"duplicate key {k!r} in the same batch"))
                    continue
                keys[k] = item
            batch.append(item)
            if len(batch) >= batch_size:
                del open_batches[g]
                flush(batch)
        for batch, _keys in list(open_batches.values()):
            flush(batch)
        open_batches.clear()
        for future in pending:
            future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return result
