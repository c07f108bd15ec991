"""Words for counts in messages, logs and figure labels: "1 worker", "2 workers", never "1 workers"."""
from __future__ import annotations


def plural(n, word: str, many: str | None = None) -> str:
    """``plural(1, "epoch")`` -> ``"1 epoch"``; ``plural(3, "process", "processes")`` -> ``"3 processes"``."""
    return f"{n} {word if n == 1 else many or word + 's'}"
