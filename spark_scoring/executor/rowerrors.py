"""Per-row model errors: find the rows a model raises on, inside the task, without losing the others.

Runs on: executors. No Spark import.

When a model (its ``preprocess`` or its forward pass) raises on a batch,
:func:`isolate` splits the batch in halves until the rows that raise are
alone, scores every other row, and reports each failing row's error
(``"UnidentifiedImageError: cannot identify image file ..."``). It is bounded:
past ``limit`` failing rows in one task it raises :class:`RowErrorLimit`, so a
broken model fails fast instead of bisecting every batch. The failure stays in
the task: Spark does not retry a whole task for one corrupt JPEG.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import ScoringError

__all__ = ["RowErrorLimit", "isolate", "take", "describe"]

#: The most characters of one row's error message kept (the quarantine reason).
MESSAGE_CHARS = 500


class RowErrorLimit(ScoringError):
    """Too many rows of one task made the model raise: the model, not the data, looks broken."""

    exit_code = 1


def describe(exc: BaseException) -> str:
    """``"ExceptionClass: message"`` for a quarantine reason (first line, bounded)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:MESSAGE_CHARS]


def take(payload: Any, idx: np.ndarray) -> Any:
    """The rows ``idx`` of a model input or a prepared batch (frame, ndarray, tensor, dict, tuple, list)."""
    import pandas as pd

    if payload is None:
        return None
    if isinstance(payload, pd.DataFrame):
        return payload.iloc[idx].reset_index(drop=True)
    if isinstance(payload, pd.Series):
        return payload.iloc[idx].reset_index(drop=True)
    if isinstance(payload, dict):
        return {k: take(v, idx) for k, v in payload.items()}
    if isinstance(payload, tuple):
        return tuple(take(v, idx) for v in payload)
    if isinstance(payload, list):
        return [payload[int(i)] for i in idx]
    if hasattr(payload, "index_select"):  # a torch tensor (on its device)
        import torch

        return payload.index_select(0, torch.as_tensor(idx, dtype=torch.long, device=payload.device))
    return payload[idx]


def isolate(call: Callable[[np.ndarray], Any], n: int, *, limit: int, seen: list[int],
            first_error: BaseException | None = None) -> tuple[list[tuple[np.ndarray, Any]], dict[int, str]]:
    """Run ``call(row indices)`` over ``n`` rows, bisecting around the rows that raise.

    Returns ``([(indices, output)] for the pieces that ran, {row: error text})``.
    ``seen`` is the task's running count of failed rows (one list shared by its
    batches); past ``limit`` it raises :class:`RowErrorLimit`. ``first_error``: the
    error the whole batch raised (the caller already tried it).
    """
    pieces: list[tuple[np.ndarray, Any]] = []
    errors: dict[int, str] = {}
    stack = [np.arange(n)]
    tried_whole = first_error is not None
    while stack:
        idx = stack.pop()
        if tried_whole and len(idx) == n and n > 1:  # the whole batch already failed: split it
            tried_whole = False
            half = len(idx) // 2
            stack += [idx[half:], idx[:half]]
            continue
        try:
            pieces.append((idx, call(idx)))
        except Exception as exc:  # noqa: BLE001 - a model's error on some row of this piece
            if len(idx) > 1:
                half = len(idx) // 2
                stack += [idx[half:], idx[:half]]
                continue
            errors[int(idx[0])] = describe(exc)
            seen[0] += 1
            if seen[0] > limit:
                raise RowErrorLimit(
                    f"the model raised on more than {limit} rows of one task (the last: row error "
                    f"{describe(exc)!r}); it looks broken for this data rather than for a few rows. Fix: check "
                    "the model against a sample of the input, or raise engine.max_row_errors."
                ) from exc
    return pieces, errors
