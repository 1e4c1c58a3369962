"""How many rows an INSERT, UPDATE or DELETE run in a session matched."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase


def rowcount(session: Session, statement: UpdateBase) -> int:
    """Run ``statement`` in the session's transaction; the rows it matched. ``Session.execute`` is
    typed to return a plain ``Result``; for a data-changing statement it is the cursor's, with the count."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount
