"""The search space of ``optimize``: every candidate the sweep's axes allow, and the
one-axis moves between them that the agent policy walks along.

Axes, each ordered from mild to aggressive:

- ``bits``: 32 > 16 > 8 > 4 (fewer bits = more aggressive); the 8-bit backend is a
  lateral choice at the same rung.
- ``shape``: how much is pruned: unstructured sparsities ascending; an N:M pattern sits at
  its implied sparsity, after the unstructured one (4:8 before 2:4: fewer constraints).
- ``method``: none, then the pruning methods (lateral between themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import (
    DEFAULT_QUANT_BACKEND,
    CandidateSpec,
    PruneSpec,
    QuantSpec,
    candidate_grid,
)

AXES = ("bits", "shape", "method", "backend")


def shape_key(p: PruneSpec) -> tuple[float, int]:
    """Order of pruning shapes: sparsity, then how constrained the pattern is."""
    if p.method == "none":
        return (0.0, 0)
    nm = p.nm
    # 4:8 keeps more freedom than 2:4 at the same sparsity: smaller M = more constrained
    return (p.sparsity, 0 if nm is None else 1000 - nm[1])


def shape_of(p: PruneSpec) -> str:
    return "dense" if p.method == "none" else (p.pattern if p.nm else f"{p.sparsity:g}")


@dataclass(frozen=True)
class Move:
    """One step from ``src`` to ``dst`` along ``axis``: ``push`` (more aggressive),
    ``back`` (milder) or ``lateral`` (same rung)."""

    axis: str
    kind: str
    dst: CandidateSpec


@dataclass
class Space:
    """All candidates of the axes, deduplicated, in grid order."""

    bits: tuple[int, ...]
    prune: tuple[str, ...]
    sparsity: tuple[float, ...]
    pattern: tuple[str, ...]
    quant_backend: tuple[str, ...] = (DEFAULT_QUANT_BACKEND,)
    candidates: list[CandidateSpec] = field(init=False)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.bits or not self.prune:
            raise UserError("the search space needs at least one bits value and one prune method")
        self.candidates = candidate_grid(
            list(self.bits),
            list(self.prune),
            list(self.sparsity) or [0.0],
            list(self.pattern) or ["unstructured"],
            list(self.quant_backend),
        )
        self._index = {c.canonical(): i for i, c in enumerate(self.candidates)}
        self._bit_order = sorted({c.quant.bits for c in self.candidates}, reverse=True)
        self._shapes = sorted(
            {shape_key(c.prune) for c in self.candidates if c.prune.method != "none"}
        )

    @classmethod
    def from_dict(cls, d: dict) -> Space:
        return cls(
            bits=tuple(d["bits"]),
            prune=tuple(d["prune"]),
            sparsity=tuple(d["sparsity"]),
            pattern=tuple(d["pattern"]),
            quant_backend=tuple(d.get("quant_backend", (DEFAULT_QUANT_BACKEND,))),
        )

    def as_dict(self) -> dict:
        return {
            "bits": list(self.bits),
            "prune": list(self.prune),
            "sparsity": list(self.sparsity),
            "pattern": list(self.pattern),
            "quant_backend": list(self.quant_backend),
        }

    def __len__(self) -> int:
        return len(self.candidates)

    def __contains__(self, c: CandidateSpec) -> bool:
        return c.canonical() in self._index

    def index(self, c: CandidateSpec) -> int:
        return self._index[c.canonical()]

    def reference(self) -> CandidateSpec:
        """The mildest candidate: most bits, no pruning (or the mildest pruning if the
        space has no unpruned candidate)."""
        return min(self.candidates, key=self.aggressiveness)

    def aggressiveness(self, c: CandidateSpec) -> tuple[int, int]:
        """(bits rung, shape rung); 0 = mildest on each axis."""
        b = self._bit_order.index(c.quant.bits)
        s = 0 if c.prune.method == "none" else 1 + self._shapes.index(shape_key(c.prune))
        return (b, s)

    def at_least_as_aggressive(self, c: CandidateSpec, than: CandidateSpec) -> bool:
        """True when ``c`` compresses at least as hard as ``than`` on every axis, with the
        same pruning method (or ``than`` unpruned) and the same 8-bit backend."""
        if than.prune.method != "none" and c.prune.method != than.prune.method:
            return False
        if c.quant.bits == than.quant.bits and c.quant.backend != than.quant.backend:
            return False
        a, b = self.aggressiveness(c), self.aggressiveness(than)
        return a[0] >= b[0] and a[1] >= b[1]

    def moves(self, c: CandidateSpec) -> list[Move]:
        """Every candidate of the space one axis-step away from ``c``, pushes first."""
        out: list[Move] = []
        ab, ash = self.aggressiveness(c)
        for d in self.candidates:
            if d.canonical() == c.canonical():
                continue
            bb, bsh = self.aggressiveness(d)
            same_prune = d.prune.canonical() == c.prune.canonical()
            same_quant = d.quant.canonical() == c.quant.canonical()
            if same_prune and d.quant.bits != c.quant.bits and abs(bb - ab) == 1:
                if d.quant.backend in (c.quant.backend, "none") or c.quant.backend == "none":
                    out.append(Move("bits", "push" if bb > ab else "back", d))
            elif same_prune and d.quant.bits == c.quant.bits:
                out.append(Move("backend", "lateral", d))
            elif same_quant and c.prune.method == "none" and d.prune.method != "none":
                if bsh == 1:  # from dense: the mildest shape of each method
                    out.append(Move("method", "push", d))
            elif same_quant and d.prune.method == "none" and c.prune.method != "none":
                if ash == 1:
                    out.append(Move("method", "back", d))
            elif same_quant and d.prune.method == c.prune.method and abs(bsh - ash) == 1:
                out.append(Move("shape", "push" if bsh > ash else "back", d))
            elif same_quant and d.prune.method != c.prune.method and bsh == ash:
                if c.prune.method != "none" and d.prune.method != "none":
                    out.append(Move("method", "lateral", d))
        order = {"push": 0, "back": 1, "lateral": 2}
        axis_order = {"bits": 0, "method": 1, "shape": 2, "backend": 3}
        out.sort(key=lambda m: (order[m.kind], axis_order[m.axis], self.index(m.dst)))
        return out

    def parse(self, canonical: str) -> CandidateSpec:
        return CandidateSpec.model_validate_json(canonical)


def candidate_from_fields(
    bits: int, method: str, sparsity: float, pattern: str, backend: str = DEFAULT_QUANT_BACKEND
) -> CandidateSpec:
    return CandidateSpec(
        prune=PruneSpec(method=method, sparsity=sparsity, pattern=pattern),
        quant=QuantSpec(bits=bits, backend=backend),
    )
