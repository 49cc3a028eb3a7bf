"""Server config, cluster members and join tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pincus.db.store import Store
from pincus.errors import ConflictError, NotFoundError


def config(store: Store, member: str) -> dict[str, str]:
    """The cluster-wide keys and MEMBER's own ones."""
    with store.read() as c:
        rows = c.execute(
            "SELECT key, value FROM config WHERE member = '' OR member = ? ORDER BY key", (member,)
        ).fetchall()
    return {r["key"]: r["value"] for r in rows}


def set_config(store: Store, changes: dict[str, tuple[str, str]]) -> None:
    """CHANGES: key -> (member the key belongs to, '' cluster-wide; new value, '' to unset)."""
    with store.tx() as c:
        for key, (member, value) in changes.items():
            c.execute("DELETE FROM config WHERE member = ? AND key = ?", (member, key))
            if value:
                c.execute("INSERT INTO config (member, key, value) VALUES (?, ?, ?)", (member, key, value))


@dataclass
class MemberRecord:
    id: int
    name: str
    address: str
    heartbeat: float
    state: str  # "online" or "evacuated": what an operator made it; Offline comes from the heartbeat
    description: str = ""


def members(store: Store) -> list[MemberRecord]:
    with store.read() as c:
        rows = c.execute("SELECT id, name, address, heartbeat, state, description FROM members ORDER BY id")
        return [MemberRecord(*tuple(r)) for r in rows.fetchall()]


def member(store: Store, name: str) -> MemberRecord:
    for m in members(store):
        if m.name == name:
            return m
    raise NotFoundError(f'Cluster member "{name}" not found')


def add_member(store: Store, rec: MemberRecord) -> None:
    with store.tx() as c:
        if c.execute("SELECT 1 FROM members WHERE name = ?", (rec.name,)).fetchone():
            raise ConflictError(f'The cluster already has a member named "{rec.name}"')
        if c.execute("SELECT 1 FROM members WHERE address = ?", (rec.address,)).fetchone():
            raise ConflictError(f"The cluster already has a member at {rec.address}")
        c.execute(
            "INSERT INTO members (id, name, address, heartbeat, state, description)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (rec.id, rec.name, rec.address, rec.heartbeat, rec.state, rec.description),
        )


def next_member_id(store: Store) -> int:
    with store.read() as c:
        return int(c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM members").fetchone()[0])


def heartbeat(store: Store, name: str, now: float) -> None:
    with store.tx() as c:
        c.execute("UPDATE members SET heartbeat = ? WHERE name = ?", (now, name))


def set_member_state(store: Store, name: str, state: str) -> None:
    with store.tx() as c:
        c.execute("UPDATE members SET state = ? WHERE name = ?", (state, name))


def rename_member(store: Store, name: str, new_name: str) -> None:
    with store.tx() as c:
        if c.execute("SELECT 1 FROM members WHERE name = ?", (new_name,)).fetchone():
            raise ConflictError(f'The cluster already has a member named "{new_name}"')
        if c.execute("UPDATE members SET name = ? WHERE name = ?", (new_name, name)).rowcount == 0:
            raise NotFoundError(f'Cluster member "{name}" not found')
        for table, column in (("config", "member"), ("instances", "location"), ("networks_members", "member"),
                              ("networks_member_config", "member")):  # fmt: skip
            c.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new_name, name))


def delete_member(store: Store, name: str) -> None:
    with store.tx() as c:
        c.execute("DELETE FROM members WHERE name = ?", (name,))
        c.execute("DELETE FROM config WHERE member = ?", (name,))


@dataclass
class TokenRecord:
    name: str
    secret: str
    expires_at: float


def tokens(store: Store) -> list[TokenRecord]:
    with store.read() as c:
        rows = c.execute("SELECT name, secret, expires_at FROM join_tokens ORDER BY name").fetchall()
        return [TokenRecord(*tuple(r)) for r in rows]


def add_token(store: Store, rec: TokenRecord) -> None:
    with store.tx() as c:
        if c.execute("SELECT 1 FROM join_tokens WHERE name = ?", (rec.name,)).fetchone():
            raise ConflictError(
                f'A join token for "{rec.name}" exists already (cluster revoke-token it first)'
            )
        if c.execute("SELECT 1 FROM members WHERE name = ?", (rec.name,)).fetchone():
            raise ConflictError(f'The cluster already has a member named "{rec.name}"')
        c.execute(
            "INSERT INTO join_tokens (name, secret, expires_at) VALUES (?, ?, ?)",
            (rec.name, rec.secret, rec.expires_at),
        )


def take_token(store: Store, name: str, check: Callable[[TokenRecord | None], None]) -> None:
    """Consume the token for NAME if CHECK (given it, or None) raises nothing; in one transaction,
    so a token is used once and a refused one stays as it was."""
    with store.tx() as c:
        row = c.execute("SELECT name, secret, expires_at FROM join_tokens WHERE name = ?", (name,)).fetchone()
        check(None if row is None else TokenRecord(*tuple(row)))
        c.execute("DELETE FROM join_tokens WHERE name = ?", (name,))


def delete_token(store: Store, name: str) -> None:
    with store.tx() as c:
        if c.execute("DELETE FROM join_tokens WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f'No join token for "{name}"')
