"""A volume's tree as a tar stream between members: GNU tar on both ends, numeric owners, modes,
times, hard links, device nodes and xattrs (file capabilities) kept, so a volume already shifted
to an instance's idmap arrives as it was.

The stream is an HTTP/1.1 chunked body: only a sender whose tar succeeded writes the last (empty)
chunk, so a receiver can tell a whole volume from one cut short (tar's own end-of-archive blocks
come before any file that was never sent)."""

from __future__ import annotations

import subprocess
import tempfile
from io import BufferedIOBase
from pathlib import Path
from typing import IO, Any, BinaryIO

from pincus.config.server_keys import parse_address
from pincus.errors import HostError, NotFoundError
from pincus.host import certs

CHUNK = 1 << 20
_TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--sparse"]


def send(path: Path, out: BinaryIO | BufferedIOBase) -> None:
    """Volume PATH's tree, as a chunked HTTP body on OUT (the response head is the caller's);
    a tar failure leaves the body without its last chunk."""
    # tar's complaints go to a file, not a pipe: a pipe nobody reads while the data flows could
    # fill and stall tar.
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        ["tar", *_TAR_FLAGS, "-C", str(path), "-cf", "-", "."],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read(CHUNK):
            out.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        if proc.wait() != 0:
            err = _text(errors)
            raise HostError(f"tar of {path} failed: {err.splitlines()[-1:] or proc.returncode}")
        out.write(b"0\r\n\r\n")
        out.flush()
    except OSError as e:
        raise HostError(f"sending {path}: {e.strerror or e}") from e
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        errors.close()


def receive(address: str, fingerprint: str, client: tuple[Path, Path], path: str, dest: Path,
            timeout: float = 60.0) -> int:  # fmt: skip
    """GET PATH from the member at ADDRESS (a stream `send` wrote) unpacked into DEST, an existing
    empty directory; the bytes received. NotFoundError when the member answers 404."""
    host, port = parse_address(address)
    sock = certs.connect((host, port), fingerprint, client, timeout)
    proc: subprocess.Popen[bytes] | None = None
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        reader = sock.makefile("rb")
        status_line = reader.readline(8192)
        headers = _headers(reader)
        status = int(status_line.split()[1])
        if status == 404:
            raise NotFoundError(f"Member {address} has nothing at {path}")
        if status != 200 or headers.get("transfer-encoding", "").lower() != "chunked":
            body = reader.read(65536).decode(errors="replace")
            raise HostError(
                f"Member {address} answered GET {path} with "
                f"{status_line.decode(errors='replace').strip()} {body.strip()}"
            )
        proc = subprocess.Popen(
            ["tar", *_TAR_FLAGS, "--same-permissions", "--same-owner", "-C", str(dest), "-xf", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        assert proc.stdin is not None
        total = _copy_chunks(reader, proc.stdin, address, path)
        proc.stdin.close()
        if proc.wait() != 0:
            raise HostError(f"Unpacking {path} from member {address} into {dest} failed: {_text(errors)}")
        return total
    except BrokenPipeError:  # tar gave up on the archive: its own words say why
        assert proc is not None
        proc.wait()
        raise HostError(
            f"Unpacking {path} from member {address} into {dest} failed: {_text(errors)}"
        ) from None
    except (OSError, ValueError, IndexError) as e:
        raise HostError(f"GET {path} from member {address} failed: {e}") from e
    finally:
        sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        errors.close()


def _text(errors: IO[bytes]) -> str:
    errors.seek(0)
    return errors.read(65536).decode(errors="replace").strip()


def _headers(reader: Any) -> dict[str, str]:
    headers = {}
    while (line := reader.readline(8192).strip()) != b"":
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers


def _copy_chunks(reader: Any, out: IO[bytes], address: str, path: str) -> int:
    """A chunked body from READER into OUT, up to its last chunk (an error if it never comes)."""
    total = 0
    while True:
        size_line = reader.readline(1024)
        if not size_line:
            raise HostError(f"Member {address} ended GET {path} before its end (the sender failed)")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            reader.readline(1024)
            return total
        left = size
        while left > 0:
            data = reader.read(min(left, CHUNK))
            if not data:
                raise HostError(f"Member {address} ended GET {path} mid-chunk")
            out.write(data)
            left -= len(data)
        total += size
        if reader.readline(16) != b"\r\n":
            raise HostError(f"Member {address} sent a malformed chunk on GET {path}")
