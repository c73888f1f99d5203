"""The gate's result: one `CheckResult` per expectation, the `ValidationReport` and its JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturegan.errors import ValidationFailed


@dataclass(frozen=True)
class CheckResult:
    name: str  # "<suite>/<check>", e.g. "culturegan_manifest/sha256_unique"
    success: bool
    observed: str  # what GX observed, short
    message: str = ""  # the summary line when the check failed: expected vs observed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "observed": self.observed,
            "message": self.message,
        }


@dataclass
class ValidationReport:
    success: bool
    checks: list[CheckResult]
    summary: str  # one line per failed check, or one line saying everything passed
    docs_index: Path  # Data Docs index.html
    rows: int = 0
    styles: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "summary": self.summary,
            "docs_index": str(self.docs_index),
            "rows": self.rows,
            "styles": list(self.styles),
            "checks_total": len(self.checks),
            "checks_failed": len(self.failures),
            "seconds": round(self.seconds, 3),
            "checks": [c.to_dict() for c in self.checks],
        }

    def raise_for_failure(self) -> None:
        if not self.success:
            raise ValidationFailed(
                f"data validation failed ({len(self.failures)} check(s)):\n{self.summary}",
                hint=f"see the Data Docs at {self.docs_index}",
            )
