"""The decision graph of ``optimize``: observe -> propose -> validate -> decide-stop.

One invocation per iteration: the input is the last batch of evaluated candidates (the
observations, in proposal order); the output state holds the next batch of proposals (the
candidates' flow parameters; ``settings.batch`` of them at most) or the stop reason. The
state - history, decisions, frontiers, spent budgets, the batch and which of its members
finished - lives in the checkpointer (SQLite for ``optimize``), keyed by thread id, so an
interrupted search resumes where it stopped, with only the unfinished members of its batch.

    observe ──> propose ──> validate ──> decide_stop ──> END
       │           ^  ^         │            │ batch not full: propose the next member,
       │           │  └─────────┘            │ with the members so far pending
       │           └─────────────────────────┘
       └── a budget is already spent ──────> decide_stop
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from ecocompress.agents.fidelity import MultiFidelity, rung_settings
from ecocompress.agents.llm import InvalidProposal, LLMPolicy
from ecocompress.agents.policies import AgentPolicy, make_policy
from ecocompress.agents.settings import SearchSettings
from ecocompress.agents.view import ProposalKind, SearchView, fidelity, proposal
from ecocompress.tasks.errors import UserError


class SearchState(TypedDict, total=False):
    settings: dict[str, Any]
    run: dict[str, Any] | None  # the evaluation settings (the flows' RunParams, as JSON)
    observation: dict[str, Any] | None
    history: Annotated[list[dict[str, Any]], operator.add]
    decisions: Annotated[list[dict[str, Any]], operator.add]
    frontiers: Annotated[list[list[str]], operator.add]
    proposal: dict[str, Any] | None
    observations: list[dict[str, Any]] | None  # input: the batch's results, in its order
    batch: list[dict[str, Any]]  # the proposals of this iteration (the last is ``proposal``)
    batch_open: bool  # decide_stop asks for another member
    finished: dict[str, dict[str, Any]]  # evaluation index -> observation, of the batch
    feedback: str | None
    attempts: int
    stop_reason: str | None
    spent: dict[str, float]


def view_of(
    settings: SearchSettings,
    history: list[dict[str, Any]],
    pending: list[dict[str, Any]] | None = None,
) -> SearchView:
    return SearchView.from_settings(settings, history, pending)


def batch_of(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The proposals awaiting evaluation (a checkpoint written before batches: its one)."""
    if values.get("batch"):
        return list(values["batch"])
    return [values["proposal"]] if values.get("proposal") else []


def state_summary(view: SearchView, spent: dict[str, float]) -> dict[str, Any]:
    """What the proposer saw, recorded with each decision."""
    ref = view.reference_row()
    return {
        "n_evaluations": len(view.history),
        "n_candidates": len(view.latest()),
        "frontier": sorted(r["candidate"] for r in view.frontier()),
        "reference_accuracy": ref.get("accuracy") if ref else None,
        "spent": dict(spent),
    }


def _stop_reason(s: SearchSettings, state: SearchState, view: SearchView) -> str | None:
    spent = state.get("spent") or {}
    n = int(spent.get("evaluations", 0))
    if s.max_candidates is not None and n + len(state.get("batch") or []) >= s.max_candidates:
        return f"candidate budget spent: {n} of {s.max_candidates} evaluations"
    if s.max_minutes is not None and spent.get("seconds", 0.0) >= 60 * s.max_minutes:
        return (
            f"time budget spent: {spent['seconds'] / 60:.1f} of {s.max_minutes:g} minutes "
            "of evaluation"
        )
    if s.carbon_budget_kg is not None and spent.get("co2_kg", 0.0) >= s.carbon_budget_kg:
        what = "the search emitted" if s.carbon_accounting == "emitted" else "evaluations cost"
        return (
            f"carbon budget spent: {what} {spent['co2_kg']:.3g} of {s.carbon_budget_kg:g} kg CO2eq"
        )
    fronts = state.get("frontiers") or []
    if s.patience is not None and len(fronts) > s.patience:
        recent = fronts[-(s.patience + 1) :]
        if all(f == recent[0] for f in recent):
            feasible = [
                r
                for r in view.frontier()
                if not view.constraints.violations(r) and view.verdict(r) != "bad"
            ]
            goals = (
                s.memory_limit_gb is not None
                or s.latency_limit_ms is not None
                or s.accuracy_drop is not None
            )
            if goals and feasible:
                return (
                    f"goals met: {', '.join(sorted(r['candidate'] for r in feasible))} satisfy "
                    f"the limits and the accuracy floor, and the frontier has not changed in "
                    f"{s.patience} evaluations"
                )
            return f"no improvement: the frontier has not changed in {s.patience} evaluations"
    if state.get("proposal") is None:
        return None  # filled in by decide_stop with the proposer's reason
    return None


def build_graph(checkpointer: Any = None, chat_model: Any = None):
    """Compile the decision graph. ``chat_model`` is needed by the ``llm`` policy only."""
    from langgraph.graph import END, START, StateGraph

    def settings_of(state: SearchState) -> SearchSettings:
        return SearchSettings.model_validate(state["settings"])

    def observe(state: SearchState) -> dict[str, Any]:
        observations = list(state.get("observations") or [])
        if state.get("observation"):  # one observation (a caller or checkpoint before batches)
            observations.append(state["observation"])
        out: dict[str, Any] = {
            "observation": None,
            "observations": None,
            "proposal": None,
            "batch": [],
            "batch_open": False,
            "finished": {},
            "feedback": None,
            "attempts": 0,
        }
        spent = dict(state.get("spent") or {"evaluations": 0, "seconds": 0.0, "co2_kg": 0.0})
        if not observations:
            out["spent"] = spent
            return out
        s = settings_of(state)
        history = list(state.get("history", []))
        frontiers = []
        for obs in observations:  # one frontier per evaluation: patience counts evaluations
            spent["evaluations"] = spent.get("evaluations", 0) + 1
            spent["seconds"] = spent.get("seconds", 0.0) + float(obs.get("wall_s") or 0.0)
            co2 = obs.get("emitted_co2_kg" if s.carbon_accounting == "emitted" else "co2_kg")
            spent["co2_kg"] = spent.get("co2_kg", 0.0) + float(co2 or 0.0)
            history.append(obs)
            frontiers.append(sorted(r["key"] for r in view_of(s, history).frontier()))
        out.update(history=observations, spent=spent, frontiers=frontiers)
        return out

    def propose(state: SearchState) -> dict[str, Any]:
        s = settings_of(state)
        view = view_of(s, state.get("history", []), state.get("batch"))
        ref = view.space.reference()
        if ref.canonical() not in view.tried():
            p = proposal(
                ref,
                "reference",
                "the reference is evaluated first: the accuracy floor and the "
                "recommendation are measured against it",
                "reference",
                s.base_limit,
            )
            if s.fidelities:
                p.update(rung_settings(s.fidelities, 0))
            return {"proposal": p}
        attempts = state.get("attempts", 0)
        if s.policy == "llm":
            if attempts < s.max_llm_attempts:
                try:
                    assert chat_model is not None, "policy llm needs a chat model"
                    return {"proposal": LLMPolicy(chat_model).propose(view, state.get("feedback"))}
                except InvalidProposal as exc:
                    return _rejected(str(exc), attempts)
            p = AgentPolicy().propose(view)
            if p is not None:
                p["reason"] = (
                    f"fallback to agent after {attempts} invalid llm answers "
                    f"(last: {state.get('feedback')}): {p['reason']}"
                )
                p["fallback_from"] = "llm"  # counted by agents.llm.llm_counts
            return {"proposal": p, "feedback": None}
        policy = make_policy(s.policy, sampler=s.sampler)
        if s.fidelities:
            policy = MultiFidelity(policy)
        return {"proposal": policy.propose(view)}

    def _rejected(reason: str, attempts: int) -> dict[str, Any]:
        return {
            "proposal": None,
            "feedback": reason,
            "attempts": attempts + 1,
            "decisions": [{"event": "rejected", "policy": "llm", "reason": reason}],
        }

    def validate(state: SearchState) -> dict[str, Any]:
        p = state.get("proposal")
        if p is None:
            return {}
        s = settings_of(state)
        view = view_of(s, state.get("history", []), state.get("batch"))
        space = view.space
        problem = None
        try:
            c = space.parse(p["key"])
        except ValueError as exc:
            problem = f"not a candidate spec: {exc}"
        else:
            if c not in space:
                problem = f"{c.label} is outside the search space"
            elif p["key"] in view.pending_keys():
                problem = f"{c.label} is already proposed in this batch"
            else:
                done = view.latest().get(p["key"])
                if done is not None:
                    higher = p.get("kind") in (
                        ProposalKind.REEVALUATE,
                        ProposalKind.PROMOTE,
                    ) and fidelity(p) > fidelity(done)
                    if not higher:
                        problem = f"{c.label} was already evaluated"
        if problem is None:
            return {}
        if p.get("policy") == "llm":
            return _rejected(problem, state.get("attempts", 0))
        rejected = [{"event": "rejected", "policy": p.get("policy"), "reason": problem}]
        if p["key"] in view.pending_keys():  # a built-in policy's bug: close the batch here
            return {"proposal": None, "decisions": rejected}
        # a built-in policy proposing an invalid candidate is a bug: record it, use the agent
        alt = (MultiFidelity(AgentPolicy()) if s.fidelities else AgentPolicy()).propose(view)
        if alt is not None:
            alt["reason"] = f"fallback to agent ({p.get('policy')}: {problem}): {alt['reason']}"
        return {"proposal": alt, "decisions": rejected}

    def after_observe(state: SearchState) -> str:
        # a spent budget needs no proposal (an llm proposal costs a model call)
        s = settings_of(state)
        view = view_of(s, state.get("history", []))
        return "decide_stop" if _stop_reason(s, state, view) else "propose"

    def after_validate(state: SearchState) -> str:
        s = settings_of(state)
        if state.get("proposal") is None and state.get("feedback") and s.policy == "llm":
            return "propose"
        return "decide_stop"

    def decide_stop(state: SearchState) -> dict[str, Any]:
        s = settings_of(state)
        view = view_of(s, state.get("history", []))
        spent = state.get("spent") or {}
        batch = list(state.get("batch") or [])
        reason = _stop_reason(s, state, view)
        p = state.get("proposal") if reason is None else None
        if batch and p is None:
            # the batch is closed: a budget is reached with its members counted, or the
            # policy has nothing more to propose before they are evaluated
            return {"proposal": batch[-1], "batch_open": False}
        if reason is None and p is None:
            reason = "no proposal can improve the frontier: " + (
                "screening is done and every candidate that survived the races reached the top rung"
                if s.fidelities
                else "every candidate of the space was evaluated"
                if len(view.tried()) >= len(view.space)
                else f"policy {s.policy} has no candidate left to propose"
            )
        seen = state_summary(view, spent)
        if reason is not None:
            return {
                "stop_reason": reason,
                "proposal": None,
                "batch_open": False,
                "decisions": [{"event": "stop", "reason": reason, "state_seen": seen}],
            }
        assert p is not None
        p = dict(p)
        # eliminations are recorded once, when the rung they happen at is first raced past
        done = {
            (d["key"], d["rung"])
            for d in state.get("decisions", [])
            if d.get("event") == "eliminate"
        }
        out = [
            {"event": "eliminate", **e}
            for e in p.pop("eliminated", [])
            if (e["key"], e["rung"]) not in done
        ]
        index = int(spent.get("evaluations", 0)) + len(batch)
        batched = {"batch_start": int(spent.get("evaluations", 0))} if s.batch > 1 else {}
        if batch:
            seen["pending"] = [q["label"] for q in batch]
        out.append({"event": "propose", "index": index, **p, **batched, "state_seen": seen})
        batch.append(p)
        return {
            "decisions": out,
            "proposal": p,
            "batch": batch,
            "batch_open": len(batch) < s.batch,
            "feedback": None,
            "attempts": 0,
        }

    def after_decide(state: SearchState) -> str:
        return "propose" if state.get("batch_open") and not state.get("stop_reason") else END

    g = StateGraph(SearchState)
    g.add_node("observe", observe)
    g.add_node("propose", propose)
    g.add_node("validate", validate)
    g.add_node("decide_stop", decide_stop)
    g.add_edge(START, "observe")
    g.add_conditional_edges("observe", after_observe, ["propose", "decide_stop"])
    g.add_edge("propose", "validate")
    g.add_conditional_edges("validate", after_validate, ["propose", "decide_stop"])
    g.add_conditional_edges("decide_stop", after_decide, ["propose", END])
    return g.compile(checkpointer=checkpointer)


def sqlite_checkpointer(path: str):
    """LangGraph's SQLite checkpointer on ``path`` (created if missing)."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    return SqliteSaver(conn)


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names whose values differ, of the settings both hold (one added since is not)."""
    return sorted(k for k in new.keys() & old.keys() if old[k] != new[k])


def thread_exists(
    graph: Any, thread_id: str, settings: SearchSettings, run: dict[str, Any] | None = None
) -> bool:
    """True when the thread has a checkpoint (a resume).

    Args:
        run: the evaluation settings (JSON) the thread is resumed with; compared with the
            ones it was started with when its checkpoint holds them.

    Raises:
        UserError: the thread was started with other settings (the differing fields named).
    """
    snap = graph.get_state({"configurable": {"thread_id": thread_id}})
    if not snap.values:
        return False
    a = SearchSettings.model_validate(snap.values["settings"]).model_dump(mode="json")
    diff = differing(a, settings.model_dump(mode="json"))
    old_run = snap.values.get("run")
    if run is not None and old_run is not None:
        diff = sorted({*diff, *differing(old_run, run)})
    if diff:
        verb = "differs" if len(diff) == 1 else "differ"
        raise UserError(
            f"thread {thread_id!r} was started with other settings ({', '.join(diff)} {verb}): "
            "resume it with the same command, or pass a new --thread-id"
        )
    return True


def run_search(
    graph: Any,
    thread_id: str,
    settings: SearchSettings,
    evaluate,
    run: dict[str, Any] | None = None,
    evaluate_batch=None,
) -> dict[str, Any]:
    """Drive the graph until it stops; returns its final state.

    ``evaluate(proposal, index)`` returns one observation. ``evaluate_batch(items, done)``,
    when given, evaluates a batch's ``(index, proposal)`` items (in parallel, say) and calls
    ``done(index, observation)`` as each finishes; without it the items are evaluated one
    after another with ``evaluate``. Each finished member is checkpointed at once, so a
    resume evaluates only the members that had not finished.

    Resumes the thread if its checkpoint exists (finishing an interrupted step first, then
    evaluating the pending batch), else starts it with ``settings`` (and ``run``, the
    evaluation settings a resume is checked against).

    Raises:
        UserError: the thread exists with other settings.
    """
    # a batch member takes a few graph steps (more when an llm answer is asked again)
    config = {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": 50 + 8 * settings.batch * settings.max_llm_attempts,
    }
    if not thread_exists(graph, thread_id, settings, run):
        graph.invoke({"settings": settings.model_dump(mode="json"), "run": run}, config)
    elif graph.get_state(config).next:  # an invocation was interrupted between nodes
        graph.invoke(None, config)

    def one_by_one(items, done) -> None:
        for index, prop in items:
            done(index, evaluate(prop, index))

    while True:
        values = graph.get_state(config).values
        if values.get("stop_reason"):
            return values
        batch = batch_of(values)
        start = len(values.get("history", []))
        finished: dict[str, dict[str, Any]] = dict(values.get("finished") or {})

        def done(index: int, obs: dict[str, Any], finished=finished) -> None:
            finished[str(index)] = obs
            # written as decide_stop's: its edge leads to END, the batch stays pending
            graph.update_state(config, {"finished": dict(finished)}, as_node="decide_stop")

        unfinished = [(start + i, p) for i, p in enumerate(batch) if str(start + i) not in finished]
        if unfinished:
            (evaluate_batch or one_by_one)(unfinished, done)
        graph.invoke(
            {"observations": [finished[str(start + i)] for i in range(len(batch))]}, config
        )
