"""Running nftables: libnftables in-process through ctypes, or the nft program; listing tables; and
the checks every value passes before it enters a rule (``nft_ports`` and ``nft_networks`` build
the rules).

Every daemon owns two tables named after its tag, ``bridge pincus_<tag>`` and ``inet pincus_<tag>``;
nothing outside them is ever touched. Each public call of those modules is one atomic nft batch.

libnftables is called in-process through ctypes, one context per thread, re-made when the thread
has moved to another network namespace (a context keeps acting in the namespace it was made in).
Without the library the ``nft`` program is run instead: 5-20 ms per call, as each process that
deleted anything waits for an RCU grace period when its netlink socket closes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
import weakref
from collections.abc import Sequence
from typing import Protocol

from pincus.errors import HostError, InvalidError

TABLE_PREFIX = "pincus_"
_TAG = re.compile(r"[0-9a-f]{1,8}")

# ---------------------------------------------------------------------------------------------
# Validation: every value is checked and re-rendered from its parsed form before it enters a rule.


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise InvalidError(f"Invalid nftables tag {tag!r}: expected 1-8 lowercase hex digits")
    return tag


def table_name(tag: str) -> str:
    """The name of both tables of the daemon with TAG."""
    return f"{TABLE_PREFIX}{_check_tag(tag)}"


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidError(f"Invalid {what} {value!r}: must be a bool")
    return value


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_net(value: object, version: int, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a CIDR of the given IP version; host bits are tolerated and dropped."""
    if not isinstance(value, str) or not value.isascii() or "%" in value or value != value.strip():
        raise InvalidError(f"Invalid {what} {value!r}")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise InvalidError(f"Invalid {what} {value!r}: {e}") from None
    if net.version != version:
        raise InvalidError(f"Invalid {what} {value!r}: not an IPv{version} address")
    # Rebuild from integers so nothing of the input text (e.g. a scope id) can survive.
    if version == 4:
        return ipaddress.IPv4Network((int(net.network_address), net.prefixlen))
    return ipaddress.IPv6Network((int(net.network_address), net.prefixlen))


def render_net(net: Net) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)


# ---------------------------------------------------------------------------------------------
# Running nft: libnftables in-process, or the nft program.

_NFT_CTX_OUTPUT_JSON = 1 << 4  # from <nftables/libnftables.h>
# nfgen_family numbers (NFPROTO_*) of the table families nft knows.
_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


class NftError(Exception):
    """nft refused a batch; the message is nft's first error line."""


class _Runner(Protocol):
    name: str

    def run(self, script: str) -> str: ...

    def list_tables_json(self) -> str: ...

    def list_json(self, command: str) -> str: ...


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else "unknown error"


def _current_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


class _LibContext:
    """One nft_ctx. Its netlink socket is opened at creation and stays in that network namespace."""

    def __init__(self, lib: ctypes.CDLL, netns: tuple[int, int]) -> None:
        self.lib = lib
        self.netns = netns
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise HostError("create libnftables context: nft_ctx_new failed")
        self.ctx: int = ctx
        self._finalizer = weakref.finalize(self, lib.nft_ctx_free, ctx)
        # Output and errors go to memory buffers instead of the daemon's stdout/stderr.
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            raise HostError("create libnftables context: cannot buffer its output")
        self.flags: int = lib.nft_ctx_output_get_flags(ctx)

    def run(self, script: str, json_output: bool = False) -> str:
        self.lib.nft_ctx_output_set_flags(self.ctx, self.flags | (_NFT_CTX_OUTPUT_JSON if json_output else 0))
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode("utf-8"))
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode("utf-8", "replace")
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise NftError(_first_error_line(err))
        return out


class _LibRunner:
    name = "libnftables"

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_int
        for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_char_p
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib
        # A context is not thread-safe: each thread gets its own.
        self.local = threading.local()

    def _ctx(self) -> _LibContext:
        netns = _current_netns()
        ctx: _LibContext | None = getattr(self.local, "ctx", None)
        if ctx is None or ctx.netns != netns:
            # A thread that moved to another namespace (setns) needs a context opened there.
            ctx = _LibContext(self.lib, netns)
            self.local.ctx = ctx
        return ctx

    def run(self, script: str) -> str:
        return self._ctx().run(script)

    def list_tables_json(self) -> str:
        return self._ctx().run("list tables\n", json_output=True)

    def list_json(self, command: str) -> str:
        return self._ctx().run(command + "\n", json_output=True)


class _BinaryRunner:
    name = "nft program"

    def __init__(self, path: str) -> None:
        self.path = path

    def _nft(self, argv: list[str], stdin: str | None) -> str:
        try:
            proc = subprocess.run(
                [self.path, *argv], input=stdin, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NftError(str(e)) from e
        if proc.returncode != 0:
            raise NftError(_first_error_line(proc.stderr))
        return proc.stdout

    def run(self, script: str) -> str:
        return self._nft(["-f", "-"], script)

    def list_tables_json(self) -> str:
        # Not "-j -f -": with -j nft reads the file as JSON first and the text parser then gets
        # an already consumed stdin, printing nothing.
        return self._nft(["-j", "list", "tables"], None)

    def list_json(self, command: str) -> str:
        # The command is made of identifiers only (no quoting needed).
        return self._nft(["-j", *command.split()], None)


_runner: _Runner | None = None
_runner_lock = threading.Lock()


def _load_runner(prefer: str = "library") -> _Runner:
    if prefer == "library":
        try:
            return _LibRunner(ctypes.CDLL("libnftables.so.1"))
        except (OSError, AttributeError):
            pass  # no usable library: fall back to the program
    path = shutil.which("nft")
    if path is None:
        raise HostError("run nftables: neither libnftables.so.1 nor the nft program is installed")
    return _BinaryRunner(path)


def _get_runner() -> _Runner:
    global _runner
    if _runner is None:
        with _runner_lock:
            if _runner is None:
                _runner = _load_runner()
    return _runner


def select_backend(prefer: str) -> str:
    """Force the backend ("library" or "binary"); for benchmarks and tests. Returns its name."""
    global _runner
    with _runner_lock:
        _runner = _load_runner(prefer)
        return _runner.name


def backend_name() -> str:
    """How nft commands are run here: "libnftables" (in-process) or "nft program"."""
    return _get_runner().name


def firewall_driver() -> str:
    """What `GET /1.0` reports as the firewall: "nftables" when rules can be loaded, else "none"."""
    try:
        backend_name()
    except HostError:
        return "none"
    return "nftables"


def _script(cmds: Sequence[str]) -> str:
    return "\n".join(cmds) + "\n"


def run_batch(cmds: Sequence[str]) -> None:
    """Run CMDS as one atomic batch; NftError with nft's message if it is refused."""
    _get_runner().run(_script(cmds))


def list_json(command: str) -> str:
    """nft's JSON output of a list COMMAND (identifiers only); NftError if it is refused."""
    return _get_runner().list_json(command)


def run(operation: str, cmds: Sequence[str]) -> None:
    try:
        _get_runner().run(_script(cmds))
    except NftError as e:
        raise HostError(f"{operation}: {e}") from None


def run_removal(operation: str, family: str, table: str, cmds: Sequence[str]) -> None:
    """A removal batch that cannot fail while the table exists; without the table it is a no-op."""
    try:
        _get_runner().run(_script(cmds))
    except NftError as e:
        if (family, table) not in list_tables():
            return
        raise HostError(f"{operation}: {e}") from None


def list_tables() -> list[tuple[str, str]]:
    tables = _list_tables_netlink()
    return tables if tables is not None else _list_tables_nft()


def _list_tables_netlink() -> list[tuple[str, str]] | None:
    """Tables by one netlink dump; None if pyroute2 cannot do it.

    nft's own "list tables" first fetches the whole ruleset, every rule of every table: 100 ms
    with 500 filtered NICs, against 1 ms for this dump.
    """
    try:
        from pyroute2.nftables.main import NFTables
    except ImportError:
        return None
    try:
        with NFTables(nfgen_family=0) as nl:
            msgs = nl.get_tables()
        return [
            (_FAMILIES.get(m["nfgen_family"], str(m["nfgen_family"])), str(m.get_attr("NFTA_TABLE_NAME")))
            for m in msgs
        ]
    except Exception:  # any failure of this shortcut falls back to asking nft
        return None


def _list_tables_nft() -> list[tuple[str, str]]:
    try:
        out = _get_runner().list_tables_json()
    except NftError as e:
        raise HostError(f"list nftables tables: {e}") from None
    try:
        items = json.loads(out).get("nftables", []) if out.strip() else []
    except (ValueError, AttributeError) as e:
        raise HostError(f"list nftables tables: unreadable JSON output: {e}") from None
    tables = []
    for item in items:
        t = item.get("table") if isinstance(item, dict) else None
        if isinstance(t, dict) and isinstance(t.get("family"), str) and isinstance(t.get("name"), str):
            tables.append((t["family"], t["name"]))
    return tables


def rule_counts(family: str, table: str, chains: set[str]) -> dict[str, int] | None:
    """Chain -> number of rules, for those of CHAINS the table holds now (a fresh listing, never a
    cache); None if there is no such table."""
    if (family, table) not in list_tables():
        return None
    try:
        items = json.loads(list_json(f"list table {family} {table}")).get("nftables", [])
    except NftError as e:
        raise HostError(f"list nftables table {family} {table}: {e}") from None
    except (ValueError, AttributeError) as e:
        raise HostError(f"list nftables table {family} {table}: unreadable JSON output: {e}") from None
    counts: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(c := item.get("chain"), dict) and c.get("name") in chains:
            counts.setdefault(str(c["name"]), 0)
        elif isinstance(r := item.get("rule"), dict) and r.get("chain") in chains:
            counts[str(r["chain"])] = counts.get(str(r["chain"]), 0) + 1
    return counts
