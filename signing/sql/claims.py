"""The one claim mechanism of the signing service's durable work: signing jobs (signing.sql.store) and completion
callbacks (signing.sql.callbacks) are taken the same way.

In one writing unit of work (storage.direct): a SELECT of the due rows' ids `FOR UPDATE SKIP LOCKED`, then one
UPDATE per id that gives the row to this claim (a lease and the claim's id) and returns what the worker needs.

- PostgreSQL: the SELECT locks the due rows until the unit ends; rows another worker's unit has locked are skipped,
  never waited for (SKIP LOCKED), so any number of workers on any number of nodes take disjoint rows.
- SQLite renders no FOR UPDATE: the writing unit holds the database's write lock from its first statement (BEGIN
  IMMEDIATE), so claims are serialised.
- Two statements on purpose: inside `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` PostgreSQL
  may run the subquery more than once and take more than n rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, Table, Update, bindparam, select

from storage.direct import Transaction


def claimable(table: Table, due: ColumnElement[bool], *order_by: ColumnElement[Any]) -> Select[tuple[Any]]:
    """SELECT the ids of up to `:limit` rows of `table` that are `due`, in `order_by` order, FOR UPDATE SKIP
    LOCKED (see module docstring)."""
    return select(table.c.id).where(due).order_by(*order_by).limit(bindparam("limit")) \
        .with_for_update(skip_locked=True)


async def claim_due(tx: Transaction, due: Select[tuple[Any]], claim: Update, *, limit: int,
                    **params: Any) -> list[tuple[Any, ...]]:
    """Run `due` (built by `claimable`) and `claim` (an UPDATE ... WHERE id = :id ... RETURNING) for each id it
    found, in the writing unit `tx`; the rows `claim` returned. `params` are given to both statements."""
    claimed = []
    for (row_id,) in await tx.all(due, limit=limit, **params):
        row = await tx.one(claim, id=row_id, **params)
        if row is not None:
            claimed.append(row)
    return claimed
