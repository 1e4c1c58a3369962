"""The job store: jobs, their chunks and items, and the state changes the workers make.

Every state change that finishes a chunk happens in one transaction that the caller owns:
the chunk's guard (``queued`` -> done), the items' results, the release of the next chunk,
the usage event, the job's counters and its final status. Each completion retires one
queued chunk and releases at most one pending chunk (``SKIP LOCKED``: never the same one
twice), so the number of chunks in flight never exceeds what the producer released. The
rows every completion contends for -- ``tenant_llm`` (the token counter) and the job's
row -- are updated last, just before the commit, so their locks are held briefly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Insert, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conf.errors import Conflict, NotFound
from models.dml import rowcount
from models.tables import job_chunks, job_items, jobs

TERMINAL = ("succeeded", "partial", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ItemRow:
    custom_id: str
    text: str | None = None
    payload: Any = None
    blob: bytes | None = None


@dataclass
class WorkItem:
    id: int
    seq: int
    custom_id: str
    text: str | None
    payload: Any
    blob: bytes | None


@dataclass
class ChunkWork:
    chunk_id: int
    job_id: str
    tenant_id: str
    model_type: str
    model: str
    options: dict[str, Any]
    items: list[WorkItem]
    release: int = 0  # the release this execution claimed


@dataclass
class ItemOutcome:
    """What a chunk produced for one item: a vector, a JSON result and/or binary output.
    ``error_code`` marks an answer that is not a success though the call was (a model's
    refusal): the item is failed with that code and message, its result kept."""

    item_id: int
    vector: bytes | None = None
    result: Any = None
    result_blob: bytes | None = None
    error_code: str | None = None
    error_message: str | None = None


class Sent(NamedTuple):
    """A chunk to send a message for, and which release of it the message is."""

    chunk_id: int
    release: int


@dataclass
class ChunkDone:
    """What finishing a chunk changed: for the caller to send messages and log."""

    applied: bool  # False: the chunk was already finished or cancelled; nothing written
    released: list[Sent] = field(default_factory=list)
    job_status: str | None = None


def insert_job(
    session: Session,
    *,
    job_id: str,
    tenant_id: str,
    tenant_llm_id: int,
    model_type: str,
    model: str,
    options: dict[str, Any],
    idempotency_key: str | None,
    retry_of: str | None = None,
) -> str | None:
    """Insert the job row; returns the existing job's id if the idempotency key is taken."""
    if idempotency_key:
        existing = find_by_idempotency_key(session, tenant_id, idempotency_key)
        if existing:
            return existing
    try:
        with session.begin_nested():
            session.execute(
                jobs.insert().values(
                    id=job_id,
                    tenant_id=tenant_id,
                    tenant_llm_id=tenant_llm_id,
                    model_type=model_type,
                    model=model,
                    status="queued",
                    idempotency_key=idempotency_key,
                    options=options,
                    retry_of=retry_of,
                )
            )
    except IntegrityError:
        if idempotency_key:  # lost a race with the same key
            return find_by_idempotency_key(session, tenant_id, idempotency_key)
        raise
    return None


def set_request_hash(session: Session, job_id: str, request_hash: str) -> None:
    session.execute(update(jobs).where(jobs.c.id == job_id).values(request_hash=request_hash))


def find_by_idempotency_key(session: Session, tenant_id: str, key: str) -> str | None:
    row = session.execute(select(jobs.c.id).where(jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key == key)).first()
    return row.id if row else None


def insert_items(session: Session, job_id: str, rows: Iterable[ItemRow], *, batch: int = 5000) -> int:
    """Insert items in order, ``batch`` rows per statement; returns how many."""
    stmt = insert(job_items)
    buf: list[dict[str, Any]] = []
    n = 0
    for row in rows:
        buf.append(
            {
                "job_id": job_id,
                "seq": n,
                "custom_id": row.custom_id,
                "status": "pending",
                "text": row.text,
                "payload": row.payload,
                "blob": row.blob,
            }
        )
        n += 1
        if len(buf) >= batch:
            _insert_batch(session, stmt, buf)
            buf = []
    if buf:
        _insert_batch(session, stmt, buf)
    return n


def _insert_batch(session: Session, stmt: Insert, buf: list[dict[str, Any]]) -> None:
    try:
        with session.begin_nested():
            session.execute(stmt, buf)
    except IntegrityError:
        dup = _duplicate_custom_id(session, buf)
        if dup is None:  # another constraint: not the caller's duplicate
            raise
        raise Conflict(
            f"custom_id {dup!r} is used by more than one item; custom_id values must be unique within a job"
        ) from None


def _duplicate_custom_id(session: Session, buf: list[dict[str, Any]]) -> str | None:
    """The custom id that broke uniqueness: repeated inside ``buf`` or already inserted."""
    seen: set[str] = set()
    for row in buf:
        if row["custom_id"] in seen:
            return row["custom_id"]
        seen.add(row["custom_id"])
    return session.scalar(
        select(job_items.c.custom_id)
        .where(job_items.c.job_id == buf[0]["job_id"], job_items.c.custom_id.in_(list(seen)))
        .limit(1)
    )


def insert_chunks(session: Session, job_id: str, n_items: int, chunk_size: int) -> int:
    rows = [
        {
            "job_id": job_id,
            "seq": i,
            "status": "pending",
            "first_item": start,
            "item_count": min(chunk_size, n_items - start),
        }
        for i, start in enumerate(range(0, n_items, chunk_size))
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(job_chunks), rows[start : start + 5000])
    session.execute(update(jobs).where(jobs.c.id == job_id).values(items_total=n_items, chunks_total=len(rows)))
    return len(rows)


def release_chunks(session: Session, job_id: str, n: int, stall_seconds: float) -> list[Sent]:
    """Mark up to ``n`` pending chunks queued (in order), as their first release; the caller
    sends their messages after commit."""
    if n <= 0:
        return []
    pending = (
        select(job_chunks.c.id)
        .where(job_chunks.c.job_id == job_id, job_chunks.c.status == "pending")
        .order_by(job_chunks.c.seq)
        .limit(n)
        .with_for_update(skip_locked=True)  # two finishing chunks never release the same one
    )
    released = session.execute(
        update(job_chunks)
        .where(job_chunks.c.id.in_(pending.scalar_subquery()))
        .values(
            status="queued", releases=job_chunks.c.releases + 1, deadline_at=utcnow() + timedelta(seconds=stall_seconds)
        )
        .returning(job_chunks.c.id, job_chunks.c.releases)
    ).all()
    return sorted(Sent(r.id, r.releases) for r in released)  # ids grow with seq: the release order


# Why a message was dropped without calling the provider (the task's result, logged).
SKIPPED = "skipped"  # the chunk is done, cancelled or gone
SUPERSEDED = "superseded"  # the sweeper sent a newer release of the chunk since
CLAIMED = "claimed"  # another execution of the same release holds the chunk's lease


def claim_chunk(session: Session, chunk_id: int, release: int | None, lease_seconds: float) -> ChunkWork | str:
    """Claim the chunk for this message and return its inputs, or why the message is dropped
    (:data:`SKIPPED`, :data:`SUPERSEDED`, :data:`CLAIMED`): at most one execution of a
    release reaches the provider.

    The claim is the chunk's lease: status ``running`` until ``deadline_at`` (now +
    ``lease_seconds``; the caller renews it while it runs). A message of the current release
    claims a ``queued`` chunk, or a ``running`` one whose lease expired (its holder died).
    ``release`` None is a message from before releases were sent: taken as the current one.
    Marks the job running on its first chunk."""
    now = utcnow()
    row = session.execute(
        select(
            job_chunks.c.job_id,
            job_chunks.c.status,
            job_chunks.c.releases,
            job_chunks.c.deadline_at,
            job_chunks.c.first_item,
            job_chunks.c.item_count,
            jobs.c.tenant_id,
            jobs.c.model_type,
            jobs.c.model,
            jobs.c.options,
            jobs.c.status.label("job_status"),
        )
        .join(jobs, jobs.c.id == job_chunks.c.job_id)
        .where(job_chunks.c.id == chunk_id)
        .with_for_update(of=job_chunks)  # two messages of one release: the second waits, then sees the claim
    ).first()
    if row is None or row.status not in ("queued", "running") or row.job_status in TERMINAL:
        return SKIPPED
    if release is not None and release < row.releases:
        return SUPERSEDED
    if row.status == "running" and row.deadline_at is not None and _aware(row.deadline_at) > now:
        return CLAIMED
    claimed = rowcount(  # conditional too: SQLite has no FOR UPDATE
        session,
        update(job_chunks)
        .where(
            job_chunks.c.id == chunk_id,
            job_chunks.c.releases == row.releases,
            or_(
                job_chunks.c.status == "queued", and_(job_chunks.c.status == "running", job_chunks.c.deadline_at <= now)
            ),
        )
        .values(status="running", deadline_at=now + timedelta(seconds=lease_seconds)),
    )
    if claimed == 0:
        return CLAIMED
    if row.job_status == "queued":
        session.execute(
            update(jobs)
            .where(jobs.c.id == row.job_id, jobs.c.status == "queued")
            .values(status="running", started_at=now)
        )
    items = [
        WorkItem(r.id, r.seq, r.custom_id, r.text, r.payload, r.blob)
        for r in session.execute(
            select(
                job_items.c.id,
                job_items.c.seq,
                job_items.c.custom_id,
                job_items.c.text,
                job_items.c.payload,
                job_items.c.blob,
            )
            .where(
                job_items.c.job_id == row.job_id,
                job_items.c.seq >= row.first_item,
                job_items.c.seq < row.first_item + row.item_count,
            )
            .order_by(job_items.c.seq)
        )
    ]
    return ChunkWork(
        chunk_id, row.job_id, row.tenant_id, row.model_type, row.model, row.options or {}, items, release=row.releases
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def renew_lease(session: Session, chunk_id: int, release: int, lease_seconds: float) -> bool:
    """Extend a running chunk's lease; False if this release no longer holds it (finished,
    cancelled, or re-sent after the lease expired)."""
    renewed = rowcount(
        session,
        update(job_chunks)
        .where(job_chunks.c.id == chunk_id, job_chunks.c.status == "running", job_chunks.c.releases == release)
        .values(deadline_at=utcnow() + timedelta(seconds=lease_seconds)),
    )
    return renewed > 0


def postpone_chunk(session: Session, chunk_id: int, release: int, seconds: float) -> None:
    """The chunk goes back to the queue (a retry or a wait for rate budget): it gives up its
    lease, and the sweeper must not think it stalled for ``seconds``."""
    session.execute(
        update(job_chunks)
        .where(
            job_chunks.c.id == chunk_id,
            job_chunks.c.status.in_(("queued", "running")),
            job_chunks.c.releases == release,
        )
        .values(status="queued", deadline_at=utcnow() + timedelta(seconds=seconds))
    )


@dataclass
class ChunkError:
    """The whole chunk failed: every item gets this code and (scrubbed) message."""

    code: str
    message: str


def finish_chunk(
    session: Session,
    work: ChunkWork,
    outcome: list[ItemOutcome] | ChunkError,
    *,
    tokens: int,
    stall_seconds: float,
    record_usage: Callable[[], object] | None = None,
) -> ChunkDone:
    """Write a chunk's results (or its error) and advance the job, in the caller's
    transaction. ``applied`` is False if another execution finished the chunk first.
    ``record_usage`` (the caller's usage event) is called in the same transaction when the
    chunk's tokens count: it was applied, or the job was cancelled while it ran.

    Lock order: the chunk rows first, then ``tenant_llm`` (in ``record_usage``), then the
    job's row, updated last so that its lock -- taken by every completion of the job -- is
    held for one statement before the commit. :func:`cancel_job` locks chunks before the job
    too, so the two cannot deadlock."""
    failed = isinstance(outcome, ChunkError)
    guard = rowcount(
        session,
        # Not only this release's claim: an execution whose lease expired meanwhile still
        # applies if it finishes first (its call was paid for), and the newer message is skipped.
        update(job_chunks)
        .where(job_chunks.c.id == work.chunk_id, job_chunks.c.status.in_(("queued", "running")))
        .values(status="failed" if failed else "succeeded", deadline_at=None),
    )
    if guard == 0:
        current = session.scalar(select(job_chunks.c.status).where(job_chunks.c.id == work.chunk_id))
        if current == "cancelled" and record_usage is not None and record_usage():
            # The job was cancelled while this chunk ran: its tokens were spent all the same.
            session.execute(
                update(jobs).where(jobs.c.id == work.job_id).values(total_tokens=jobs.c.total_tokens + tokens)
            )
        return ChunkDone(applied=False)
    if isinstance(outcome, ChunkError):
        n_ok, n_failed = 0, len(work.items)
        session.execute(
            update(job_items)
            .where(job_items.c.job_id == work.job_id, job_items.c.seq.between(work.items[0].seq, work.items[-1].seq))
            .values(status="failed", error_code=outcome.code, error_message=outcome.message)
        )
    else:
        n_failed = sum(1 for o in outcome if o.error_code)
        n_ok = len(outcome) - n_failed
        _write_results(session, outcome)
    released = release_chunks(session, work.job_id, 1, stall_seconds)  # one finished, one more may start
    if record_usage is not None:  # it updates tenant_llm, a row as hot as the job's: late too
        record_usage()
    counts = session.execute(
        update(jobs)
        .where(jobs.c.id == work.job_id)
        .values(
            items_succeeded=jobs.c.items_succeeded + n_ok,
            items_failed=jobs.c.items_failed + n_failed,
            chunks_done=jobs.c.chunks_done + 1,
            total_tokens=jobs.c.total_tokens + tokens,
        )
        .returning(jobs.c.chunks_done, jobs.c.chunks_total, jobs.c.items_succeeded, jobs.c.items_failed, jobs.c.status)
    ).one()
    if counts.status == "cancelled":
        return ChunkDone(applied=True, job_status="cancelled")
    if counts.chunks_done >= counts.chunks_total:
        final = "succeeded" if counts.items_failed == 0 else ("failed" if counts.items_succeeded == 0 else "partial")
        session.execute(update(jobs).where(jobs.c.id == work.job_id).values(status=final, finished_at=utcnow()))
        return ChunkDone(applied=True, job_status=final)
    return ChunkDone(applied=True, released=released, job_status=counts.status)


def _write_results(session: Session, outcomes: list[ItemOutcome]) -> None:
    if session.get_bind().dialect.name == "postgresql" and all(
        o.result is None and o.result_blob is None and o.error_code is None for o in outcomes
    ):
        # Embedding chunks: one statement for all vectors instead of one round trip per item.
        session.execute(
            text(
                "UPDATE job_items SET status = 'succeeded', vector = u.v "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:vectors AS bytea[])) AS u(id, v) WHERE job_items.id = u.id"
            ),
            {"ids": [o.item_id for o in outcomes], "vectors": [o.vector for o in outcomes]},
        )
        return
    session.execute(
        update(job_items)
        .where(job_items.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            vector=bindparam("b_vector"),
            result=bindparam("b_result"),
            result_blob=bindparam("b_blob"),
            error_code=bindparam("b_code"),
            error_message=bindparam("b_message"),
        ),
        [
            {
                "b_id": o.item_id,
                "b_status": "failed" if o.error_code else "succeeded",
                "b_vector": o.vector,
                "b_result": o.result,
                "b_blob": o.result_blob,
                "b_code": o.error_code,
                "b_message": o.error_message,
            }
            for o in outcomes
        ],
        execution_options={"synchronize_session": False},
    )


def cancel_job(session: Session, job_id: str, tenant_id: str | None = None) -> str:
    job = get_job(session, job_id, tenant_id)
    if job["status"] in TERMINAL:
        return job["status"]
    # Chunks first, the job's row last: the lock order of finish_chunk (no deadlock between them).
    session.execute(
        update(job_chunks)
        .where(job_chunks.c.job_id == job_id, job_chunks.c.status.in_(("pending", "queued", "running")))
        .values(status="cancelled", deadline_at=None)
    )
    session.execute(
        update(job_items)
        .where(job_items.c.job_id == job_id, job_items.c.status == "pending")
        .values(status="cancelled")
    )
    session.execute(update(jobs).where(jobs.c.id == job_id).values(status="cancelled", finished_at=utcnow()))
    return "cancelled"


def stalled_chunks(session: Session, stall_seconds: float, limit: int = 500) -> list[tuple[Sent, str]]:
    """Chunks whose message was lost or whose holder died -- ``queued`` past their deadline, or
    ``running`` past their lease -- as a new release, with their model type. A message of an
    older release is dropped when a worker takes it, so a copy still waiting in the queue never
    reaches the provider. The next deadline doubles with each release (up to 16 x
    ``stall_seconds``): a queue that takes longer than the deadline to drain is re-sent to a
    few times, not forever."""
    now = utcnow()
    rows = session.execute(
        select(job_chunks.c.id, job_chunks.c.releases, jobs.c.model_type)
        .join(jobs, jobs.c.id == job_chunks.c.job_id)
        .where(job_chunks.c.status.in_(("queued", "running")), job_chunks.c.deadline_at < now)
        .order_by(job_chunks.c.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=job_chunks)
    ).all()
    stalled = []
    for r in rows:
        wait = stall_seconds * 2 ** min(max(r.releases, 1), 4)
        session.execute(
            update(job_chunks)
            .where(job_chunks.c.id == r.id)
            .values(status="queued", releases=r.releases + 1, deadline_at=now + timedelta(seconds=wait))
        )
        stalled.append((Sent(r.id, r.releases + 1), r.model_type))
    return stalled


def lost_chunks(session: Session, stall_seconds: float, after_id: int = 0, limit: int = 500) -> list[tuple[Sent, str]]:
    """The broker lost every message (it restarted empty): every ``queued`` chunk, whatever its
    deadline, as a new release, in id order from ``after_id`` (call again from the last id until
    none are left). ``running`` chunks keep their lease: their workers are still at them."""
    now = utcnow()
    rows = session.execute(
        select(job_chunks.c.id, job_chunks.c.releases, jobs.c.model_type)
        .join(jobs, jobs.c.id == job_chunks.c.job_id)
        .where(job_chunks.c.status == "queued", job_chunks.c.id > after_id)
        .order_by(job_chunks.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=job_chunks)
    ).all()
    for r in rows:
        session.execute(
            update(job_chunks)
            .where(job_chunks.c.id == r.id)
            .values(releases=r.releases + 1, deadline_at=now + timedelta(seconds=stall_seconds))
        )
    return [(Sent(r.id, r.releases + 1), r.model_type) for r in rows]


def get_job(session: Session, job_id: str, tenant_id: str | None = None) -> dict[str, Any]:
    cond = jobs.c.id == job_id
    if tenant_id is not None:
        cond = and_(cond, jobs.c.tenant_id == tenant_id)
    row = session.execute(select(jobs).where(cond)).first()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return dict(row._mapping)


def failed_items(session: Session, job_id: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    total = (
        session.scalar(
            select(func.count())
            .select_from(job_items)
            .where(job_items.c.job_id == job_id, job_items.c.status == "failed")
        )
        or 0
    )
    rows = session.execute(
        select(job_items.c.custom_id, job_items.c.error_code, job_items.c.error_message)
        .where(job_items.c.job_id == job_id, job_items.c.status == "failed")
        .order_by(job_items.c.seq)
        .limit(limit)
    )
    return [{"custom_id": r.custom_id, "code": r.error_code, "message": r.error_message} for r in rows], total


# What a job's results are read as: an item's outcome, without its inputs.
_RESULT_COLUMNS = (
    job_items.c.seq,
    job_items.c.custom_id,
    job_items.c.status,
    job_items.c.vector,
    job_items.c.result,
    job_items.c.result_blob,
    job_items.c.error_code,
    job_items.c.error_message,
)


def item_pages(session: Session, job_id: str, columns: Sequence[Any], *where: Any, batch: int = 2000) -> Iterator[Any]:
    """A job's items (``columns``, which must include ``seq``) matching ``where``, in order, read
    in pages by seq: constant memory on any database, however large the job."""
    last = -1
    while True:
        rows = session.execute(
            select(*columns)
            .where(job_items.c.job_id == job_id, job_items.c.seq > last, *where)
            .order_by(job_items.c.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def iter_items(session: Session, job_id: str, *, batch: int = 2000) -> Iterator[Any]:
    """Every item of a job with its outcome, in order (see :func:`item_pages`)."""
    return item_pages(session, job_id, _RESULT_COLUMNS, batch=batch)


def items_by_custom_id(session: Session, job_id: str, custom_ids: list[str]) -> Sequence[Any]:
    """The job's items with these custom ids (the columns of :func:`iter_items`)."""
    if not custom_ids:
        return []
    return session.execute(
        select(*_RESULT_COLUMNS).where(job_items.c.job_id == job_id, job_items.c.custom_id.in_(custom_ids))
    ).all()


def sweep_soon(session: Session, chunk_ids: list[int]) -> None:
    """Their messages could not be sent (the broker is down): make the chunks due for the next
    sweep instead of waiting out their deadline. Only chunks still ``queued`` are touched."""
    if chunk_ids:
        session.execute(
            update(job_chunks)
            .where(job_chunks.c.id.in_(chunk_ids), job_chunks.c.status == "queued")
            .values(deadline_at=utcnow())
        )
