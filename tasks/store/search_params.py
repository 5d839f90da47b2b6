"""How hard a vector search looks: the ANN parameters a caller may set, whatever backend answers the query."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.settings import Settings


@dataclass(frozen=True)
class AnnQuery:
    """How hard a vector query searches the ANN index (ignored while the table has none)."""

    nprobes: int = 40  # defaults as in Settings: recall@10 ≥ 0.95 at 100k chunks (benchmarks/query_latency.py)
    refine_factor: int | None = 5
    ef: int | None = None
    exact: bool = False  # bypass the index: exact search, for recall checks

    @classmethod
    def from_settings(cls, settings: Settings) -> AnnQuery:
        """The tuned values from settings."""
        return cls(settings.ann_nprobes, settings.ann_refine_factor or None, settings.ann_ef or None)
