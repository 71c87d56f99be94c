"""The llm policy with ``--llm local:smollm2`` on the synthetic evaluator: seconds per
answer, answers that name a new candidate, invalid answers and fallbacks.

    python tests/perf/llm_local.py [--decisions 10] [--unconstrained]

The search graph runs the llm policy after the reference on tests/agents/synthetic.py
(metrics are a fixed function of the candidate: nothing is evaluated). ``--unconstrained``
hides the local model's structured output, so the policy reads its plain greedy answer
with ``PydanticOutputParser`` (the schema is then a prompt only). Prints JSON; the README's
section "The llm policy with a local model" quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from langgraph.checkpoint.memory import InMemorySaver

from ecocompress.agents import local_chat
from ecocompress.agents.graph import build_graph, run_search
from ecocompress.agents.llm import llm_counts
from ecocompress.agents.settings import SearchSettings
from tests.agents.synthetic import SPACE, observe


def timed(times: list[float], fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        times.append(time.perf_counter() - t)
        return out

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=10)
    ap.add_argument("--unconstrained", action="store_true")
    args = ap.parse_args()
    import torch

    cls, times = local_chat.LocalChatModel, []
    if args.unconstrained:

        def no_structured(self, *a, **k):
            raise NotImplementedError

        cls.with_structured_output = no_structured
        cls._generate = timed(times, cls._generate)
    else:
        cls.decode_json = timed(times, cls.decode_json)
    t = time.perf_counter()
    chat = local_chat.load_local_chat_model("smollm2")
    load_s = time.perf_counter() - t
    s = SearchSettings(
        policy="llm",
        space=SPACE.as_dict(),
        objectives="accuracy:max,latency_ms:min,memory_gb:min",
        accuracy_drop=0.05,
        max_candidates=args.decisions + 1,
    )
    t = time.perf_counter()
    v = run_search(build_graph(InMemorySaver(), chat_model=chat), "perf", s, observe)
    search_s = time.perf_counter() - t
    props = [d for d in v["decisions"] if d["event"] == "propose"]
    out = {
        "unconstrained": args.unconstrained,
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "load_s": round(load_s, 1),
        "decisions": len(props) - 1,
        "search_s": round(search_s, 1),
        "counts": llm_counts(v["decisions"]),
        "answer_s": [round(x, 2) for x in times],
        "proposals": [(p["policy"], p["label"], p["reason"][:80]) for p in props],
        "rejected": [d["reason"][:160] for d in v["decisions"] if d["event"] == "rejected"],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
