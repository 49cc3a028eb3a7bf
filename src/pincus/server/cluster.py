"""Cluster membership: server config, `cluster enable`, join tokens and joining, members and their
heartbeats, and calls to another member's API (the forwarding helper).

A member's own view of the cluster is $PINCUS_DIR/cluster.json (name, dqlite node id, address, the
members' database addresses): pincusd reads it at start to open the replicated database instead of
SQLite. Enabling or joining a cluster changes which store the daemon runs on, so both end by
restarting the daemon in place (same pid; running instances are adopted as after a SIGTERM).

Members talk over their API listeners (TLS, the shared cluster certificate on both sides), and so
does the database: a node listens only inside its process and dials the others through their API
(make_dial, HTTP Upgrade to /internal/database)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pincus.config import server_keys
from pincus.config.network_keys import MEMBER_SPECIFIC
from pincus.config.server_keys import parse_address
from pincus.db import cluster as db
from pincus.db import dqlite_client, instances, networks
from pincus.db.store import Store
from pincus.errors import ConflictError, ForbiddenError, HostError, InvalidError, NotFoundError, PincusError
from pincus.host import certs, files, image_archive, member_api, tree, volume_stream
from pincus.host.dqlite_node import Dial, DqliteNode
from pincus.host.facade import Host
from pincus.reverter import Reverter
from pincus.server.join_token import JoinToken, check_member_name, decode
from pincus.state import State

log = logging.getLogger(__name__)

DATABASE = "pincus.db"
# Raft's timing base: heartbeat 1.5x, election 15x (dqlite's default 500 ms makes fail-over ~5 s).
NETWORK_LATENCY_MS = 100
ACCEPT_PATH = "/internal/cluster/accept"


def make_dial(
    host: Host, own: str, fingerprint: str, pair: tuple[Path, Path], nodes: list[DqliteNode]
) -> Dial:
    """How this member reaches a member's dqlite node by its cluster address: its own through the
    node's in-process socket (NODES holds it once started), the others through their API listener
    (TLS with the cluster certificate, then HTTP Upgrade)."""

    def dial(address: str, timeout: float) -> socket.socket:
        if address == own and nodes:
            return host(nodes[0].connect_local, timeout)
        return host(member_api.dial_database, address, fingerprint, pair, timeout)

    return dial


@dataclass
class LocalMember:
    """What this member knows of itself and the cluster before it can read the database."""

    name: str
    node_id: int
    address: str
    database: list[str] = field(default_factory=list)  # every member's address: where its node is

    @classmethod
    def from_doc(cls, doc: object, path: Path) -> LocalMember:
        """The member PATH (cluster.json) describes, as read from it."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            return cls(
                str(doc["name"]), int(doc["node_id"]), str(doc["address"]), [str(a) for a in doc["database"]]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise HostError(f"{path} is damaged ({e!r}): it says which cluster this member is in") from None


def cluster_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


class Cluster:
    def __init__(
        self,
        state: State,
        local: LocalMember | None,
        restart: Callable[[], None],
        on_listen_change: Callable[[list[str]], None] = lambda addresses: None,
        dial: Dial | None = None,
    ) -> None:
        self.state = state
        self.dial = dial  # how a member reaches the database (make_dial); None on a single server
        self.local = local
        self._restart = restart
        self._on_listen_change = on_listen_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changing = threading.Lock()  # one enable/join at a time
        self._voter = False
        # Told this member's new name when another member renamed it (the server wires them).
        self.on_rename: list[Callable[[str], None]] = []

    # --- who we are -------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def name(self) -> str:
        """This member's name ('' when not clustered): the member local keys are stored under."""
        return self.local.name if self.local else ""

    @property
    def clustered(self) -> bool:
        return self.local is not None

    def path(self, name: str) -> Path:
        return self.state.dir / name

    @property
    def cluster_pair(self) -> tuple[Path, Path]:
        return self.path("cluster.crt"), self.path("cluster.key")

    @property
    def server_pair(self) -> tuple[Path, Path]:
        return self.path("server.crt"), self.path("server.key")

    def listen_addresses(self) -> list[str]:
        """The TCP addresses the API serves over TLS: core.https_address and cluster.https_address."""
        return _listen_addresses(self.config())

    def tls_pair(self) -> tuple[Path, Path, Path | None]:
        """(certificate, key, trusted peer certificate) of the TLS listener: members present the
        cluster certificate and trust only it; a single server has its own and trusts nobody."""
        if self.clustered:
            crt, key = self.cluster_pair
            return crt, key, crt
        crt, key = self.server_pair
        self.state.host(certs.ensure_pair, crt, key, "pincus server")
        return crt, key, None

    # --- server config ----------------------------------------------------------------------------

    def config(self) -> dict[str, str]:
        return db.config(self.store, self.name)

    def update_config(self, new: object, patch: bool) -> None:
        if not isinstance(new, dict):
            raise InvalidError('Server "config" must be a map of strings')
        server_keys.check(new)
        old = self.config()
        target = {**old, **new} if patch else dict(new)
        target = {k: v for k, v in target.items() if v != ""}
        changed = {k for k in set(old) | set(target) if old.get(k) != target.get(k)}
        if self.clustered and "cluster.https_address" in changed:
            raise ConflictError("cluster.https_address cannot change on a cluster member")
        before, after = _listen_addresses(old), _listen_addresses(target)
        with Reverter() as undo:
            if before != after:
                # Bound before it is recorded: an address this host cannot listen on changes nothing.
                made = [p for p in self.server_pair if not self.state.host(tree.exists, p)]
                try:
                    self._on_listen_change(after)
                except PincusError as e:
                    for p in made:
                        self.state.host(files.remove, p)
                    raise InvalidError(f"{e} (server config {', '.join(sorted(changed))})") from None
                undo.add(self._on_listen_change, before)
            db.set_config(
                self.store,
                {
                    k: (self.name if server_keys.SERVER_KEYS[k].local else "", target.get(k, ""))
                    for k in changed
                },
            )
            undo.success()

    # --- GET/PUT /1.0/cluster ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"server_name": self.name, "enabled": self.clustered, "member_config": []}

    def update(self, body: object) -> None:
        """PUT /1.0/cluster: enable clustering here (no token), or join a cluster (a token)."""
        if not isinstance(body, dict):
            raise InvalidError("PUT /1.0/cluster needs a JSON object")
        if body.get("enabled") is not True:
            raise InvalidError(
                '"enabled" must be true: disabling clustering is not supported (remove the member); '
                + _what_body_has(body)
            )
        if not isinstance(body.get("server_name"), str):
            raise InvalidError(f'"server_name" is needed: the name this member takes; {_what_body_has(body)}')
        name = check_member_name(body["server_name"])
        if body.get("cluster_token"):
            self.join(name, str(body.get("server_address") or ""), body["cluster_token"])
        else:
            self.enable(name)

    # --- enable -----------------------------------------------------------------------------------

    def enable(self, name: str) -> None:
        """Make this server the first member of a new cluster: its state moves into a dqlite
        database whose first node it runs; then the daemon restarts on it."""
        with self._changing:
            if self.clustered:
                raise ConflictError(f'This server is already clustered (as "{self.name}")')
            config = self.config()
            address = config.get("cluster.https_address") or config.get("core.https_address")
            if not address:
                raise InvalidError(
                    f'Cannot enable clustering as "{name}":'
                    " set cluster.https_address or core.https_address first"
                )
            ovn = sorted(r.name for r in networks.list_all(self.store) if r.type == "ovn")
            if ovn:
                # Their logical rows are named for this server; on a cluster they are the cluster's.
                raise ConflictError(
                    f'Cannot enable clustering as "{name}": delete the OVN networks {", ".join(ovn)} first '
                    "(create them again on the cluster)"
                )
            local = LocalMember(name, 1, address, [address])
            with Reverter() as undo:
                self._new_cluster_certificate(undo)
                crt, key = self.cluster_pair
                nodes: list[DqliteNode] = []
                fingerprint = self._fingerprint()
                dial = make_dial(self.state.host, address, fingerprint, (crt, key), nodes)
                nodes.append(self._start_node(local, dial, undo))
                self._copy_into_cluster(local, config, dial)
                nodes[0].stop()
                self.state.host(files.write_json, cluster_file(self.state.dir), asdict(local))
                undo.success()
            log.info(
                'Clustering enabled: this server is member "%s" at %s; restarting on the cluster database',
                name,
                address,
            )
            self._restart()

    def _new_cluster_certificate(self, undo: Reverter) -> None:
        crt, key = self.cluster_pair
        for p in (crt, key):
            self.state.host(files.remove, p)
        self.state.host(certs.ensure_pair, crt, key, "pincus cluster")
        undo.add(self.state.host, files.remove, key)
        undo.add(self.state.host, files.remove, crt)

    def _start_node(self, local: LocalMember, dial: Dial, undo: Reverter) -> DqliteNode:
        data = self.state.dir / "database"
        if self.state.host(files.is_dir, data):
            self.state.host(files.remove_tree, data)  # a failed attempt's leftovers: never a live one
        node = self.state.host(DqliteNode, local.node_id, local.address, data, NETWORK_LATENCY_MS, dial)
        undo.add(self.state.host, files.remove_tree, data)
        undo.add(node.stop)
        return node

    def _copy_into_cluster(self, local: LocalMember, config: dict[str, str], dial: Dial) -> None:
        """Every row of every table, in one transaction (all or nothing), while the SQLite store
        is held so that no write slips in between."""
        from pincus.db.dqlite_store import DqliteStore

        DqliteStore(local.database, database=DATABASE, dial=dial).close()  # creates the schema
        conn = dqlite_client.connect_leader(local.database, DATABASE, dial=dial)
        try:
            conn.execute("PRAGMA foreign_keys = OFF")  # rows arrive table by table
            with self.store.tx() as src:
                tables = [
                    r[0]
                    for r in src.execute(
                        "SELECT name FROM sqlite_master"
                        " WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                    ).fetchall()
                ]
                conn.execute("BEGIN")
                try:
                    for table in tables:
                        conn.execute(f'DELETE FROM "{table}"')
                        cur = src.execute(f'SELECT * FROM "{table}"')
                        columns = ", ".join(f'"{d[0]}"' for d in cur.description)
                        marks = ", ".join("?" * len(cur.description))
                        for row in cur.fetchall():
                            conn.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', tuple(row))
                    conn.execute("UPDATE instances SET location = ? WHERE location = ''", (local.name,))
                    # This server's networks exist here; their member-specific keys are its own.
                    conn.execute(
                        "INSERT INTO networks_members (network_id, member, state)"
                        " SELECT id, ?, 'created' FROM networks",
                        (local.name,),
                    )
                    keys = sorted(MEMBER_SPECIFIC)
                    marks = ", ".join("?" * len(keys))
                    conn.execute(
                        "INSERT INTO networks_member_config (network_id, member, key, value)"
                        f" SELECT network_id, ?, key, value FROM networks_config WHERE key IN ({marks})",
                        (local.name, *keys),
                    )
                    conn.execute(f"DELETE FROM networks_config WHERE key IN ({marks})", tuple(keys))
                    for key in config:
                        if server_keys.SERVER_KEYS[key].local:  # until now a single server's own
                            conn.execute(
                                "UPDATE config SET member = ? WHERE member = '' AND key = ?",
                                (local.name, key),
                            )
                    conn.execute(
                        "INSERT OR REPLACE INTO config (member, key, value)"
                        " VALUES (?, 'cluster.https_address', ?)",
                        (local.name, local.address),
                    )
                    conn.execute(
                        "INSERT INTO members (id, name, address, heartbeat) VALUES (?, ?, ?, ?)",
                        (local.node_id, local.name, local.address, time.time()),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            conn.close()

    # --- join tokens ------------------------------------------------------------------------------

    def _require_clustered(self) -> LocalMember:
        if self.local is None:
            raise ConflictError("This server is not clustered (pincus cluster enable NAME first)")
        return self.local

    def _fingerprint(self) -> str:
        return self.state.host(certs.fingerprint, self.state.host(certs.read, self.cluster_pair[0]))

    def add_token(self, body: object) -> dict[str, Any]:
        """POST /1.0/cluster/members: a join token for a new member named in BODY."""
        self._require_clustered()
        name = check_member_name(body.get("server_name") if isinstance(body, dict) else None)
        ttl = server_keys.parse_expiry(server_keys.value(self.config(), "cluster.join_token_expiry"))
        token = JoinToken(
            server_name=name,
            fingerprint=self._fingerprint(),
            addresses=tuple(m.address for m in db.members(self.store)),
            secret=secrets.token_hex(32),
            expires_at=time.time() + ttl,
        )
        db.add_token(self.store, db.TokenRecord(name, token.secret, token.expires_at))
        return self._token_doc(token)

    @staticmethod
    def _token_doc(token: JoinToken) -> dict[str, Any]:
        return {
            "server_name": token.server_name,
            "token": token.encode(),
            "expires_at": token.expires_at,
            "addresses": list(token.addresses),
            "fingerprint": token.fingerprint,
        }

    def tokens(self) -> list[dict[str, Any]]:
        self._require_clustered()
        fp = self._fingerprint()
        addresses = tuple(m.address for m in db.members(self.store))
        return [
            self._token_doc(JoinToken(t.name, fp, addresses, t.secret, t.expires_at))
            for t in db.tokens(self.store)
        ]

    def revoke_token(self, name: str) -> None:
        self._require_clustered()
        db.delete_token(self.store, name)

    # --- joining: the new member's side -----------------------------------------------------------

    def join(self, name: str, server_address: str, token_text: object) -> None:
        try:
            token = decode(token_text)
        except InvalidError as e:
            raise InvalidError(f"cluster_token: {e}") from None
        with self._changing:
            if self.clustered:
                raise ConflictError(f'This server is already clustered (as "{self.name}")')
            if token.server_name != name:
                raise InvalidError(f'The join token is for member "{token.server_name}", not "{name}"')
            if token.expires_at < time.time():
                raise InvalidError(f'The join token for "{name}" has expired')
            config = self.config()
            address = (
                server_address or config.get("cluster.https_address") or config.get("core.https_address", "")
            )
            if not address:
                raise InvalidError("Joining needs server_address (or cluster.https_address) for this member")
            try:
                parse_address(address)
            except ValueError as e:
                raise InvalidError(f"Invalid server_address: {e}") from None
            self._check_empty()
            answer = self._ask_to_join(token, name, address, config)
            local = LocalMember(name, int(answer["node_id"]), address, [str(a) for a in answer["database"]])
            with Reverter() as undo:
                undo.add(self._withdraw, token, name)
                crt, key = self.cluster_pair
                self.state.host(
                    certs.write_pair,
                    crt,
                    key,
                    str(answer["cluster_certificate"]).encode(),
                    str(answer["cluster_certificate_key"]).encode(),
                )
                undo.add(self.state.host, files.remove, key)
                undo.add(self.state.host, files.remove, crt)
                if self.state.host(certs.fingerprint, self.state.host(certs.read, crt)) != token.fingerprint:
                    raise HostError("The cluster sent a certificate that is not the one the token names")
                # The node joins as a spare (no vote, so the cluster keeps its quorum while this
                # daemon restarts); the restarted daemon's first heartbeat makes it a voter.
                data = self.state.dir / "database"
                if self.state.host(files.is_dir, data):
                    self.state.host(files.remove_tree, data)
                if address not in local.database:
                    local.database.append(address)
                self.state.host(files.write_json, cluster_file(self.state.dir), asdict(local))
                undo.success()
            log.info(
                'Joined the cluster as member "%s" (dqlite node %d); restarting on the cluster database',
                name,
                local.node_id,
            )
            self._restart()

    def _check_empty(self) -> None:
        """A joining server's own instances and networks would be lost: refuse, as Incus does."""
        if instances.names(self.store):
            raise ConflictError("This server has instances: only an empty server can join a cluster")
        if networks.list_all(self.store):
            raise ConflictError("This server has networks: only an empty server can join a cluster")

    def _ask_to_join(
        self, token: JoinToken, name: str, address: str, config: dict[str, str]
    ) -> dict[str, Any]:
        local_config = {
            k: v
            for k, v in config.items()
            if server_keys.SERVER_KEYS.get(k, None) and server_keys.SERVER_KEYS[k].local
        }
        local_config["cluster.https_address"] = address
        body = {"server_name": name, "address": address, "secret": token.secret, "config": local_config}
        errors = []
        for member in token.addresses:
            try:
                status, doc = self.state.host(
                    member_api.request, member, token.fingerprint, None, "POST", ACCEPT_PATH, body
                )
            except HostError as e:
                errors.append(str(e))
                continue
            if status != 200:
                # The member answered: its refusal is the answer (another would say the same).
                raise _error_of(status, str(doc.get("error") or f"status {status}"))
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                raise HostError(f"Member {member} answered the join without its details")
            return meta
        raise HostError(f"No member in the join token could be reached: {'; '.join(errors)}")

    def _withdraw(self, token: JoinToken, name: str) -> None:
        """Undo an accepted join that failed here: the cluster forgets the member again."""
        for member in token.addresses:
            try:
                self.state.host(
                    member_api.request,
                    member,
                    token.fingerprint,
                    self.cluster_pair,
                    "DELETE",
                    f"/1.0/cluster/members/{name}?force=1",
                )
                return
            except HostError as e:
                log.warning("Could not withdraw the half-made join of %s through %s: %s", name, member, e)

    # --- joining: the cluster's side --------------------------------------------------------------

    def accept(self, body: object) -> dict[str, Any]:
        """POST /internal/cluster/accept from a server that holds a join token (it need not present
        the cluster certificate: the secret is its credential)."""
        local = self._require_clustered()
        if not isinstance(body, dict):
            raise InvalidError("A join request needs a JSON object")
        name = check_member_name(body.get("server_name"))
        address, secret, config = body.get("address"), body.get("secret"), body.get("config") or {}
        if not isinstance(address, str) or not isinstance(secret, str) or not isinstance(config, dict):
            raise InvalidError('A join request needs "address", "secret" and "config"')
        try:
            parse_address(address)
        except ValueError as e:
            raise InvalidError(f"Invalid member address: {e}") from None
        server_keys.check(config)

        def check(tok: db.TokenRecord | None) -> None:
            if tok is None:
                raise ForbiddenError(
                    f'No join token for member "{name}" (used already, revoked, or never made)'
                )
            if not hmac.compare_digest(tok.secret, secret):
                raise ForbiddenError(f'Wrong join token for member "{name}"')
            if tok.expires_at < time.time():
                raise ForbiddenError(f'The join token for member "{name}" has expired')

        taken: list[db.TokenRecord] = []

        def check_and_keep(tok: db.TokenRecord | None) -> None:
            check(tok)
            assert tok is not None
            taken.append(tok)

        with self.store.tx():
            db.take_token(self.store, name, check_and_keep)
            node_id = db.next_member_id(self.store)
            db.add_member(self.store, db.MemberRecord(node_id, name, address, 0.0, "online"))
            db.set_config(
                self.store, {k: (name, str(v)) for k, v in config.items() if server_keys.SERVER_KEYS[k].local}
            )
        try:
            self._add_node(node_id, address)
        except PincusError:
            with self.store.tx():  # as it was: no member, the token usable again
                db.delete_member(self.store, name)
                db.add_token(self.store, taken[0])
            raise
        crt, key = self.cluster_pair
        log.info('Member "%s" at %s joins as dqlite node %d', name, address, node_id)
        return {
            "node_id": node_id,
            "database": [*self._database(), address],
            "cluster_certificate": self.state.host(certs.read, crt).decode(),
            "cluster_certificate_key": self.state.host(certs.read, key).decode(),
            "accepted_by": local.name,
        }

    def _add_node(self, node_id: int, address: str, timeout: float = 30.0) -> None:
        """Add a spare node to the database's configuration; Raft takes one configuration change at
        a time (a new voter being caught up is one), so a busy leader is asked again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = dqlite_client.connect_leader(self._database(), None, dial=self.dial)
                try:
                    leader.add(node_id, address, role=None)
                    return
                finally:
                    leader.close()
            except HostError as e:
                if time.monotonic() > deadline or not (
                    "configuration change" in str(e) or isinstance(e, dqlite_client.NotLeaderError)
                ):
                    raise
                time.sleep(0.2)

    def _database(self) -> list[str]:
        return [m.address for m in db.members(self.store)] or list(self._require_clustered().database)

    # --- members ----------------------------------------------------------------------------------

    def _roles(self) -> tuple[dict[int, int], int]:
        """dqlite's view: node id -> role, and the leader's node id (0 if unknown)."""
        try:
            conn = dqlite_client.connect_leader(self._database(), None, timeout=2.0, dial=self.dial)
        except HostError:
            return {}, 0
        try:
            leader_id, _ = conn.leader()
            return {i: role for i, _, role in conn.members()}, leader_id
        except HostError:
            return {}, 0
        finally:
            conn.close()

    def members(self) -> list[dict[str, Any]]:
        self._require_clustered()
        threshold = int(server_keys.value(self.config(), "cluster.offline_threshold"))
        roles, leader = self._roles()
        now = time.time()
        out = []
        for m in db.members(self.store):
            status, message = _status(m, threshold, now)
            role = roles.get(m.id)
            member_roles = (["database-leader"] if m.id == leader else []) + (
                ["database"] if role == 0 else []
            )
            out.append(
                {
                    "server_name": m.name,
                    "url": f"https://{m.address}",
                    "database": role == 0,
                    "status": status,
                    "message": message,
                    "roles": member_roles,
                    "architecture": "x86_64",
                    "failure_domain": "default",
                    "description": m.description,
                    "config": {},
                    "groups": ["default"],
                }
            )
        return out

    def member(self, name: str) -> dict[str, Any]:
        for m in self.members():
            if m["server_name"] == name:
                return m
        raise NotFoundError(f'Cluster member "{name}" not found')

    def set_member_state(self, name: str, state: str) -> None:
        db.member(self.store, name)
        db.set_member_state(self.store, name, state)

    def rename(self, name: str, new_name: str) -> None:
        self._require_clustered()
        check_member_name(new_name)
        db.rename_member(self.store, name, new_name)
        if name == self.name:
            self._refresh_identity()

    def remove(self, name: str, force: bool) -> None:
        """DELETE /1.0/cluster/members/NAME: out of the database configuration and the member list."""
        local = self._require_clustered()
        m = db.member(self.store, name)
        if name == local.name:
            raise ConflictError("A member cannot remove itself: remove it from another member")
        if not force and self.statuses().get(name) != "Offline" and instances.names_on(self.store, name):
            raise ConflictError(f'Member "{name}" has instances: delete or move them first (or --force)')
        if len(db.members(self.store)) <= 2 and not force:
            raise ConflictError(
                "Removing this member would leave one: the cluster database needs a quorum (--force)"
            )
        leader = dqlite_client.connect_leader(self._database(), None, dial=self.dial)
        try:
            if any(i == m.id for i, _, _ in leader.members()):
                leader.remove(m.id)
        finally:
            leader.close()
        db.delete_member(self.store, name)

    # --- heartbeats -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.local is None:
            return
        # A member that just joined is a spare: it becomes a voter before it serves its API, so
        # that once `admin init` returns it is a full member (the heartbeat retries on failure).
        try:
            self._voter = self._promote()
        except PincusError as e:
            log.warning("Not a voter of the cluster database yet: %s", e)
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _beat(self) -> None:
        while True:
            interval = 5.0
            try:
                interval = max(0.5, int(server_keys.value(self.config(), "cluster.offline_threshold")) / 4)
                self._refresh_identity()
                if self._stop.is_set():
                    return  # removed from the cluster: left
                db.heartbeat(self.store, self.name, time.time())
                self._refresh_database()
                self._voter = self._voter or self._promote()
            except Exception as e:  # a lost leader: the next beat finds the new one
                log.warning("Heartbeat of %s failed: %s", self.name, e)
            if self._stop.wait(interval):
                return

    def _promote(self) -> bool:
        """Make this member's node a voter if it is not (a member joins as a spare). True once it is."""
        assert self.local is not None
        leader = dqlite_client.connect_leader(self._database(), None, timeout=5.0, dial=self.dial)
        try:
            role = {i: r for i, _, r in leader.members()}.get(self.local.node_id)
            if role == dqlite_client.VOTER:
                return True
            if role is None:
                log.warning(
                    "This member's dqlite node %d is not in the cluster's configuration", self.local.node_id
                )
                return False
            leader.assign(self.local.node_id, dqlite_client.VOTER)
            log.info("dqlite node %d is a voter now", self.local.node_id)
            return True
        finally:
            leader.close()

    def _refresh_identity(self) -> None:
        """A member is its dqlite node id: when another member renamed it, take the new name."""
        assert self.local is not None
        members = db.members(self.store)
        mine = [m for m in members if m.id == self.local.node_id]
        if not mine and members:
            self._leave()
            return
        if not mine or mine[0].name == self.local.name:
            return
        log.info('This member was renamed from "%s" to "%s"', self.local.name, mine[0].name)
        self.local.name = mine[0].name
        self.store.member = mine[0].name
        self.state.host(files.write_json, cluster_file(self.state.dir), asdict(self.local))
        for hook in self.on_rename:
            hook(mine[0].name)

    def _leave(self) -> None:
        """Another member removed this one: forget the cluster and restart as a single server (on
        a new, empty database; its instances are not the cluster's to hand back)."""
        assert self.local is not None
        log.warning(
            'Member "%s" was removed from the cluster: restarting as a single server', self.local.name
        )
        self._stop.set()
        self.state.host(files.remove, cluster_file(self.state.dir))
        for p in self.cluster_pair:
            self.state.host(files.remove, p)
        self._restart()

    def _refresh_database(self) -> None:
        """Keep cluster.json and the store's member list up to date as members come and go."""
        assert self.local is not None
        known = [m.address for m in db.members(self.store)]
        if known and sorted(known) != sorted(self.local.database):
            self.local.database = known
            addresses = getattr(self.store, "addresses", None)
            if isinstance(addresses, list):
                addresses[:] = known
            self.state.host(files.write_json, cluster_file(self.state.dir), asdict(self.local))

    # --- calling another member (the forwarding helper) ------------------------------------------

    def call(self, member: str, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        """METHOD PATH on MEMBER's API over TLS with the cluster certificate; its metadata, or its
        error raised here as the same kind of exception."""
        self._require_clustered()
        target = db.member(self.store, member)
        status, doc = self.state.host(
            member_api.request,
            target.address,
            self._fingerprint(),
            self.cluster_pair,
            method,
            path,
            body,
            timeout,
        )
        if status >= 400:
            raise _error_of(status, f'Member "{member}": {doc.get("error") or status}')
        if doc.get("type") == "async":
            # Its background operation, waited for there: the caller sees the work done or failed.
            op_id = str((doc.get("metadata") or {}).get("id", ""))
            status, doc = self.state.host(
                member_api.request, target.address, self._fingerprint(), self.cluster_pair,
                "GET", f"/1.0/operations/{op_id}/wait?timeout=-1", None, 3600.0,
            )  # fmt: skip
            op = doc.get("metadata") or {}
            if status >= 400 or op.get("status_code") != 200:
                raise _error_of(
                    op.get("err_code") or 500, f'Member "{member}": {op.get("err") or doc.get("error")}'
                )
            return op.get("metadata")
        return doc.get("metadata")

    def fetch_image(self, fp: str, main: Path, rootfs: Path) -> None:
        """Image FP's files (MAIN, and ROOTFS for a split image) from a member that has them: images
        are recorded once and stored where they were imported. Checked against the fingerprint."""
        self._require_clustered()
        statuses = self.statuses()
        tried = []
        for m in db.members(self.store):
            if m.name == self.name or statuses.get(m.name) == "Offline":
                continue
            parts = [
                (main, main.with_name(f".{fp}.fetch")),
                (rootfs, rootfs.with_name(f".{fp}.rootfs.fetch")),
            ]
            digest = hashlib.sha256()
            try:
                got = [
                    self.state.host(member_api.download, m.address, self._fingerprint(), self.cluster_pair,
                                    f"/internal/images/{fp}/{part}", tmp, digest)
                    for part, (_, tmp) in zip(("main", "rootfs"), parts, strict=True)
                ]  # fmt: skip
                if not got[0]:
                    tried.append(f"{m.name}: not there")
                    continue
                if digest.hexdigest() != fp:
                    raise HostError(
                        f'Member "{m.name}" sent files whose sha256 is not the image\'s fingerprint'
                    )
                for (final, tmp), fetched in zip(parts, got, strict=True):
                    if fetched:
                        self.state.host(image_archive.publish, tmp, final)
                log.info("Fetched image %s from member %s", fp, m.name)
                return
            except PincusError as e:
                tried.append(f"{m.name}: {e}")
            finally:
                for _, tmp in parts:
                    self.state.host(files.remove, tmp)
        raise NotFoundError(f'Image "{fp}" is on no reachable cluster member ({"; ".join(tried) or "none"})')

    def pull_volume(self, member: str, name: str, dest: Path) -> int:
        """Instance NAME's volume as MEMBER holds it, unpacked into DEST (an empty new volume); the
        bytes that came over."""
        self._require_clustered()
        source = db.member(self.store, member)
        path = f"/internal/instances/{quote(name, safe='')}/volume"
        return self.state.host(
            volume_stream.receive, source.address, self._fingerprint(), self.cluster_pair, path, dest
        )

    def statuses(self) -> dict[str, str]:
        """Member name -> Online, Offline or Evacuated."""
        if self.local is None:
            return {}
        threshold = int(server_keys.value(self.config(), "cluster.offline_threshold"))
        now = time.time()
        return {m.name: _status(m, threshold, now)[0] for m in db.members(self.store)}

    def place(self, target: str | None) -> str:
        """The member a new instance goes to: TARGET, else the Online member with the fewest
        instances ('' on a single server)."""
        if self.local is None:
            if target:
                raise InvalidError("--target needs a cluster: this server is not clustered")
            return ""
        statuses = self.statuses()
        if target:
            if target not in statuses:
                raise NotFoundError(f'Cluster member "{target}" not found')
            if statuses[target] != "Online":
                raise ConflictError(f'Cluster member "{target}" is {statuses[target]}')
            return target
        counts = {name: 0 for name, status in statuses.items() if status == "Online"}
        for location in instances.locations(self.store).values():
            if location in counts:
                counts[location] += 1
        if not counts:
            raise ConflictError("No cluster member is Online to take the instance")
        return min(sorted(counts), key=lambda n: counts[n])

    def call_all(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The same request to every other member; member name -> its metadata or the error it raised."""
        out: dict[str, Any] = {}
        for m in db.members(self.store):
            if m.name == self.name:
                continue
            try:
                out[m.name] = self.call(m.name, method, path, body)
            except PincusError as e:
                out[m.name] = e
        return out


def _what_body_has(body: dict[str, Any]) -> str:
    """The keys a refused request did give (a refusal names what it was asked)."""
    given = ", ".join(json.dumps(k) for k in body)
    return f"the request has {given}" if given else "the request body is empty"


def _listen_addresses(config: dict[str, str]) -> list[str]:
    found = [config.get("core.https_address", ""), config.get("cluster.https_address", "")]
    return sorted({a for a in found if a})


def _status(m: db.MemberRecord, threshold: int, now: float) -> tuple[str, str]:
    silent = now - m.heartbeat
    if silent > threshold:
        return "Offline", f"No heartbeat for {silent:.0f}s (threshold {threshold}s)"
    if m.state == "evacuated":
        return "Evacuated", "Unavailable due to maintenance"
    return "Online", "Fully operational"


def _error_of(status: int, message: str) -> PincusError:
    kinds: dict[int, type[PincusError]] = {
        400: InvalidError,
        403: ForbiddenError,
        404: NotFoundError,
        409: ConflictError,
    }
    return kinds.get(status, HostError)(message)
