"""Incus's JSON envelope."""

from __future__ import annotations

from typing import Any


def sync(metadata: Any = None, status_code: int = 200) -> dict[str, Any]:
    return {
        "type": "sync",
        "status": "Success",
        "status_code": status_code,
        "operation": "",
        "error_code": 0,
        "error": "",
        "metadata": metadata if metadata is not None else {},
    }


def error(code: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "status": "",
        "status_code": 0,
        "operation": "",
        "error_code": code,
        "error": message,
        "metadata": None,
    }


def async_(operation: dict[str, Any]) -> dict[str, Any]:
    """202: the work runs in the background as OPERATION; the client follows `operation`."""
    return {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": f"/1.0/operations/{operation['id']}",
        "error_code": 0,
        "error": "",
        "metadata": operation,
    }
