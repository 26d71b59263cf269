"""The doctor's finding: ``Check``, one line of the ``edge-agent check`` report (``[ok|warn|FAIL] what: detail`` and,
when not ok, the fix), and its three statuses."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    """One line of the report: ``[ok|warn|FAIL] what: detail`` and, when not ok, ``fix: ...``."""

    what: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        tag = "FAIL" if self.status == FAIL else self.status
        text = f"[{tag}] {self.what}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and self.status != OK else "")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


__all__ = ["FAIL", "OK", "WARN", "Check"]
