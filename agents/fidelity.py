"""Multi-fidelity search: screen cheaply, promote only what could still reach the frontier.

A fidelity ladder is a list of rungs, cheapest first; each rung says which benchmarks run,
on how many items (``limit``) and on how many WikiText-2 tokens (``ppl_tokens``). The top
rung is the full evaluation. ``MultiFidelity`` wraps an exploring policy (the ``agent``
by default) and works breadth-first, as successive halving does, but eliminates by
dominance beyond noise instead of a fixed fraction (racing):

1. **Screen.** The explorer, shown only the rung-0 observations and the objectives rung 0
   measures, proposes candidates; each is evaluated at rung 0. At rung 0 a candidate
   beaten beyond noise by a milder one of the same family counts as "lost too much" for
   the explorer's rules, so it does not push harder past it.
2. **Race, rung by rung.** When the explorer has nothing left, the candidates of rung r
   that no other rung-r candidate beats beyond noise (``metrics.pareto.beats_beyond_noise``
   with ``z`` standard errors on accuracy-type objectives and log perplexity; at a rung
   that lacks one of the search's quality objectives, only a quality difference beyond
   noise eliminates, never a lower cost inside the noise), that
   respect the memory / latency limits and are not below the accuracy floor beyond noise,
   are promoted to rung r + 1, best weighted score first. All promotions out of rung r
   happen before any out of rung r + 1, so a rung's population is complete when it is
   judged. Every other candidate of rung r is eliminated, with the reason.
3. **Stop** when every survivor has reached the top rung; the frontier is computed on the
   top-rung observations only.

Objectives per rung: the search's objectives that the rung measures. A rung that measures
perplexity but no accuracy benchmark judges quality by ``perplexity/wikitext2`` instead:
perplexity screens accuracy (the assumption the perf replay puts to the test).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ecocompress.agents.policies import Policy
from ecocompress.agents.view import SearchView, proposal
from ecocompress.metrics.types import Objective, is_score, measured_columns
from ecocompress.tasks.benchmarks import REGISTRY, get_benchmark
from ecocompress.tasks.benchmarks.base import Benchmark

PPL = REGISTRY["perplexity"].column  # perplexity/wikitext2
MID_LIMIT_UNLIMITED = 100


def rung_of(row: dict[str, Any]) -> int:
    return int(row.get("rung") or 0)


def measures(rung: dict[str, Any], objective: str) -> bool:
    """Does a rung with these settings produce the metric ``objective``? (``columns``: the
    score columns its benchmarks log, set by ``default_ladder``)"""
    if not is_score(objective):
        return True  # costs: the candidate's measure step runs at every rung
    columns = rung.get("columns")
    if columns is None:  # a ladder given by hand: curated benchmarks only
        columns = measured_columns([REGISTRY[b] for b in rung["benchmarks"] if b in REGISTRY])
    return objective in columns


def rung_objectives(objectives: list[Objective], rung: dict[str, Any]) -> list[Objective]:
    """The search's objectives a rung measures; perplexity stands in for accuracy when the
    rung measures no accuracy benchmark."""
    out = [o for o in objectives if measures(rung, o.name)]
    dropped_quality = any(
        is_score(o.name) and o.name != PPL and not measures(rung, o.name) for o in objectives
    )
    if dropped_quality and measures(rung, PPL) and all(o.name != PPL for o in out):
        out.insert(0, Objective(name=PPL, direction="min"))
    return out


def rung_view(view: SearchView, r: int) -> SearchView:
    """The search as seen at rung ``r``: its observations and the objectives it measures."""
    assert view.fidelities is not None
    return replace(
        view,
        history=[h for h in view.history if rung_of(h) == r],
        objectives=rung_objectives(view.objectives, view.fidelities[r]),
        fidelities=None,
        max_limit=None,
    )


def is_proxy(objectives: list[Objective], rung: dict[str, Any]) -> bool:
    """Does the rung lack a quality objective of the search (e.g. accuracy at a
    perplexity-only rung)? Its quality numbers are then a proxy."""
    return any(_quality(o) and not measures(rung, o.name) for o in objectives)


def _quality(o: Objective) -> bool:
    return is_score(o.name)


def beaten_by(view: SearchView, row: dict[str, Any], proxy: bool = False) -> dict[str, Any] | None:
    """The first ok row of ``view`` that beats ``row`` beyond noise, if any.

    With ``proxy`` (a rung that lacks one of the search's quality objectives), a row must
    also be better beyond noise on a quality objective the rung does measure: being cheaper
    while within the noise on the proxy says nothing about the objective not measured, so
    it does not eliminate.
    """
    from ecocompress.metrics.pareto import beats_beyond_noise

    quality = [o for o in view.objectives if _quality(o)]
    rows = [r for r in view.ok_rows() if all(finite(r.get(o.name)) for o in view.objectives)]
    for a in rows:
        if (
            a is not row
            and a["key"] != row["key"]
            and beats_beyond_noise(a, row, view.objectives, view.z)
            and (not proxy or any(beats_beyond_noise(a, row, [o], view.z) for o in quality))
        ):
            return a
    return None


def finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def rung_settings(fidelities: list[dict[str, Any]], r: int) -> dict[str, Any]:
    f = fidelities[r]
    return {
        "rung": r,
        "limit": f.get("limit"),
        "benchmarks": list(f["benchmarks"]),
        "ppl_tokens": f.get("ppl_tokens"),
    }


class MultiFidelity(Policy):
    """Screen with ``explorer`` at rung 0, then race the survivors up the ladder."""

    def __init__(self, explorer: Policy):
        self.explorer = explorer
        self.name = explorer.name

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        fid = view.fidelities
        assert fid is not None, "MultiFidelity needs a fidelity ladder"
        top = len(fid) - 1
        v0 = rung_view(view, 0)
        p = self.explorer.propose(ScreenView.of(v0, is_proxy(view.objectives, fid[0])))
        if p is not None:
            p.update(rung_settings(fid, 0))
            p["reason"] = f"screen at rung 0 ({describe(fid[0])}): {p['reason']}"
            return p
        for r in range(top):
            if any(int(q.get("rung") or 0) <= r for q in view.pending):
                # a rung is judged once none of its evaluations is pending (``--batch``)
                return None
            vr = rung_view(view, r)
            higher = {h["key"] for h in [*view.history, *view.pending] if rung_of(h) > r}
            survivors, eliminated = judge(vr, is_proxy(view.objectives, fid[r]))
            waiting = [s for s in survivors if s["key"] not in higher]
            if not waiting:
                continue
            waiting.sort(key=lambda s: (-vr.score(s), vr.space.index(vr.space.parse(s["key"]))))
            s = waiting[0]
            c = vr.space.parse(s["key"])
            out = proposal(
                c,
                self.name,
                f"promote to rung {r + 1} ({describe(fid[r + 1])}): no rung-{r} candidate "
                f"beats it beyond {vr.z:g} stderr on {', '.join(o.name for o in vr.objectives)} "
                f"({len(survivors)} of {len(vr.ok_rows())} rung-{r} candidates survive)",
                "promote",
                fid[r + 1].get("limit"),
            )
            out.update(rung_settings(fid, r + 1))
            out["eliminated"] = eliminated
            return out
        return None


def judge(vr: SearchView, proxy: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a rung's ok rows into survivors and eliminations (with reasons); ``proxy``: see
    ``beaten_by``."""
    survivors, eliminated = [], []
    c = vr.constraints
    for row in sorted(vr.ok_rows(), key=lambda r: vr.space.index(vr.space.parse(r["key"]))):
        reason = None
        if c.memory_limit_gb is not None and row["memory_gb"] > c.memory_limit_gb:
            reason = f"memory {row['memory_gb']:.3f} GB over the limit {c.memory_limit_gb:g} GB"
        elif c.latency_limit_ms is not None and row["latency_ms"] > c.latency_limit_ms:
            reason = f"latency {row['latency_ms']:.1f} ms over the limit {c.latency_limit_ms:g} ms"
        elif "accuracy" in row and vr.verdict(row) == "bad":
            reason = f"accuracy {row['accuracy']:.3f} below the floor beyond {vr.z:g} stderr"
        else:
            a = beaten_by(vr, row, proxy)
            if a is not None:
                reason = (
                    f"beaten beyond {vr.z:g} stderr by {a['candidate']} "
                    + "("
                    + ", ".join(
                        f"{o.name} {_fmt(a.get(o.name))} vs {_fmt(row.get(o.name))}"
                        for o in vr.objectives
                    )
                    + ")"
                )
        if reason is None:
            survivors.append(row)
        else:
            eliminated.append(
                {
                    "candidate": row["candidate"],
                    "key": row["key"],
                    "rung": rung_of(row),
                    "reason": reason,
                }
            )
    return survivors, eliminated


def _fmt(v: Any) -> str:
    return f"{float(v):.4g}" if finite(v) else "n/a"


def describe(rung: dict[str, Any]) -> str:
    parts = []
    acc = [b for b in rung["benchmarks"] if b != "perplexity"]  # scored on items
    if acc:
        lim = rung.get("limit")
        parts.append(f"{','.join(acc)} at {'all' if lim is None else lim} items")
    if "perplexity" in rung["benchmarks"]:
        parts.append(f"perplexity on {rung.get('ppl_tokens')} tokens")
    return "; ".join(parts)


class ScreenView(SearchView):
    """Rung 0 as the explorer sees it: a candidate beaten beyond noise there by a milder
    candidate of the same family is treated as one that lost too much (``verdict`` bad),
    so the explorer backs off from it and never pushes harder past it."""

    proxy: bool = False

    @classmethod
    def of(cls, v: SearchView, proxy: bool = False) -> ScreenView:
        out = cls(**{f: getattr(v, f) for f in v.__dataclass_fields__})
        out.proxy = proxy
        return out

    def verdict(self, row: dict[str, Any]) -> str:
        if "accuracy" in row and finite(row.get("accuracy")):
            v = super().verdict(row)
            if v != "ok":
                return v
        a = beaten_by(self, row, self.proxy)
        if a is not None and self.space.at_least_as_aggressive(
            self.space.parse(row["key"]), self.space.parse(a["key"])
        ):
            return "bad"
        return "ok"


def default_ladder(
    benchmarks: list[str] | list[Benchmark],
    limit: int | None,
    ppl_tokens: int,
    window: int,
    stride: int,
) -> list[dict[str, Any]]:
    """Three rungs: perplexity alone on 1/8 of the tokens; every benchmark on a third of
    the items (100 per task without ``limit``) and half the tokens; the full evaluation. Token budgets are aligned on the
    windows (``window + k * stride``) so a smaller budget is a prefix of a larger one."""

    def aligned(t: int) -> int:
        if t <= window:
            return min(window, ppl_tokens)
        return window + math.ceil((t - window) / stride) * stride

    benches = [b if isinstance(b, Benchmark) else get_benchmark(b) for b in benchmarks]
    by_name = {b.name: b for b in [*benches, REGISTRY["perplexity"]]}
    full = list(by_name)
    # a third of the top rung's items; when the top rung is the whole benchmark (no
    # --limit), MID_LIMIT_UNLIMITED items per task, so rung 1 stays a screen
    mid_limit = MID_LIMIT_UNLIMITED if limit is None else max(1, math.ceil(limit / 3))
    rungs: list[dict[str, Any]] = [
        {"benchmarks": ["perplexity"], "limit": None, "ppl_tokens": aligned(ppl_tokens // 8)},
        {"benchmarks": full, "limit": mid_limit, "ppl_tokens": aligned(ppl_tokens // 2)},
        {"benchmarks": full, "limit": limit, "ppl_tokens": ppl_tokens},
    ]
    for rung in rungs:
        rung["columns"] = sorted(measured_columns([by_name[b] for b in rung["benchmarks"]]))
    return rungs
