"""The ``optuna`` policy: Optuna's multi-objective samplers over the search axes."""

from __future__ import annotations

import random
from typing import Any

from ecocompress.agents.policies import Policy
from ecocompress.agents.space import Space, candidate_from_fields, shape_of
from ecocompress.agents.view import SearchView, finite, proposal
from ecocompress.tasks.specs import DEFAULT_QUANT_BACKEND, CandidateSpec


class OptunaPolicy(Policy):
    """Optuna's multi-objective sampler (TPE by default, or NSGA-II) over the axes.

    The study is rebuilt from the history at every call (so the proposal is a function of
    history and seed), then asked for a trial. A trial that maps to an evaluated candidate
    is told that candidate's values and asked again; after 100 such asks, the first untried
    candidate of a seeded permutation is taken (and the reason says so).

    Filling a batch (``--batch``), the proposals not evaluated yet are running trials: TPE
    takes them with its constant-liar strategy (each counted at the worst value seen), so
    the next ask moves away from them; NSGA-II is asked again past them.
    """

    name = "optuna"

    def __init__(self, sampler: str = "tpe") -> None:
        if sampler not in ("tpe", "nsga2"):
            raise ValueError(f"optuna sampler {sampler!r}: allowed tpe, nsga2")
        self.sampler = sampler

    def _study(self, view: SearchView):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        n = len(view.space)
        if self.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(
                seed=view.seed,
                n_startup_trials=min(10, max(3, n // 4)),
                constant_liar=bool(view.pending),
            )
        else:
            sampler = optuna.samplers.NSGAIISampler(seed=view.seed, population_size=max(4, n // 4))
        return optuna.create_study(
            directions=[
                "maximize" if o.direction == "max" else "minimize" for o in view.objectives
            ],
            sampler=sampler,
        )

    def _distributions(self, space: Space) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        shapes = sorted({shape_of(c.prune) for c in space.candidates if c.prune.method != "none"})
        d = {
            "bits": CategoricalDistribution(sorted({c.quant.bits for c in space.candidates})),
            "method": CategoricalDistribution(sorted({c.prune.method for c in space.candidates})),
        }
        if shapes:
            d["shape"] = CategoricalDistribution(shapes)
        backends = sorted({c.quant.backend for c in space.candidates if c.quant.bits == 8})
        if len(backends) > 1:
            d["backend"] = CategoricalDistribution(backends)
        return d

    @staticmethod
    def _to_candidate(space: Space, p: dict[str, Any]) -> CandidateSpec | None:
        shape = p.get("shape", "dense")
        if shape == "dense" or ":" in str(shape):
            sparsity, pattern = 0.5, ("unstructured" if shape == "dense" else shape)
        else:
            sparsity, pattern = float(shape), "unstructured"
        try:
            c = candidate_from_fields(
                int(p["bits"]),
                p["method"],
                sparsity,
                pattern,
                p.get("backend", DEFAULT_QUANT_BACKEND),
            )
        except ValueError:
            return None
        return c if c in space else None

    @staticmethod
    def _params(space: Space, c: CandidateSpec, dists: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = {"bits": c.quant.bits, "method": c.prune.method}
        if "shape" in dists:
            s = shape_of(c.prune)
            p["shape"] = s if s in dists["shape"].choices else dists["shape"].choices[0]
        if "backend" in dists:
            b = c.quant.backend
            p["backend"] = b if b in dists["backend"].choices else dists["backend"].choices[0]
        return p

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        import optuna
        from optuna.trial import TrialState, create_trial

        space = view.space
        latest = view.latest()
        untried = [c for c in space.candidates if c.canonical() not in view.tried()]
        if not untried:
            return None
        study = self._study(view)
        dists = self._distributions(space)

        def values(row: dict[str, Any]) -> list[float] | None:
            if row.get("status") != "ok":
                return None
            v = [row.get(o.name) for o in view.objectives]
            return [float(x) for x in v] if all(finite(x) for x in v) else None

        for row in view.history:  # in evaluation order, as the sampler saw them
            c = space.parse(row["key"])
            vals = values(latest[row["key"]])
            study.add_trial(
                create_trial(
                    params=self._params(space, c, dists),
                    distributions=dists,
                    values=vals,
                    state=TrialState.COMPLETE if vals is not None else TrialState.FAIL,
                )
            )
        for p in view.pending:  # proposed in this batch, not evaluated yet
            study.add_trial(
                create_trial(
                    params=self._params(space, space.parse(p["key"]), dists),
                    distributions=dists,
                    state=TrialState.RUNNING,
                )
            )
        pending = view.pending_keys()
        for _ in range(100):
            trial = study.ask(dists)
            c = self._to_candidate(space, trial.params)
            if c is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            k = c.canonical()
            if k in pending:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if k not in latest:
                return proposal(
                    c,
                    self.name,
                    f"optuna {self.sampler} sampler (seed {view.seed}) after "
                    f"{len(view.history)} observations",
                    "explore",
                    view.base_limit,
                )
            vals = values(latest[k])
            if vals is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, vals)
        order = list(untried)
        random.Random(view.seed).shuffle(order)
        return proposal(
            order[0],
            self.name,
            "optuna proposed only evaluated candidates in 100 asks; first untried of a "
            f"seed-{view.seed} permutation",
            "explore",
            view.base_limit,
        )
