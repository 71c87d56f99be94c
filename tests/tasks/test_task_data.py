"""Local data for any lm-eval task: mappings, converters, the gate, generated task YAMLs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks.base import lm_eval_task_dir
from ecocompress.tasks.benchmarks.task_data import (
    LAYOUT_ORIGIN,
    TaskData,
    generated_task_yaml,
    hub_schema_file,
    load_mappings,
    parse_task_data_flag,
    task_config,
    template_fields,
    validate_task_data,
)
from ecocompress.tasks.errors import UserError

EXPECTED_ITEMS = {"arc_easy": 2376, "piqa": 1838, "winogrande": 1267, "hellaswag": 10042}
TASK_YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mappings(shared_data_dir: Path) -> dict[str, TaskData]:
    return load_mappings(shared_data_dir)


@pytest.mark.parametrize("task", sorted(EXPECTED_ITEMS))
def test_packaged_layout_loads_and_passes_the_gate(
    mappings: dict[str, TaskData], shared_data_dir: Path, task: str
) -> None:
    td = mappings[task]
    assert td.origin == LAYOUT_ORIGIN and td.path.is_relative_to(shared_data_dir.resolve())
    assert td.required  # every packaged entry declares its fields
    assert validate_task_data(td) == EXPECTED_ITEMS[task]
    assert len(read_jsonl(hub_schema_file(td))) == EXPECTED_ITEMS[task]


def test_layout_split_is_the_split_the_installed_task_evaluates(
    mappings: dict[str, TaskData],
) -> None:
    for task, rel in TASK_YAML.items():
        cfg = task_config(lm_eval_task_dir() / rel)
        assert mappings[task].split == (cfg.get("test_split") or cfg["validation_split"])


def test_hub_schema_files_match_the_source_examples(mappings: dict[str, TaskData]) -> None:
    # first items as quoted in each folder's SOURCE.md
    arc = read_jsonl(hub_schema_file(mappings["arc_easy"]))[0]
    assert arc["id"] == "Mercury_417466" and arc["answerKey"] == "A"
    assert arc["choices"]["label"] == ["A", "B", "C", "D"]
    piqa = read_jsonl(hub_schema_file(mappings["piqa"]))[0]
    assert set(piqa) == {"goal", "sol1", "sol2", "label"}
    assert piqa["goal"] == "How do I ready a guinea pig cage for it's new occupants?"
    assert piqa["label"] == 0 and isinstance(piqa["label"], int)
    wino = read_jsonl(hub_schema_file(mappings["winogrande"]))[0]
    assert wino["option2"] == "Maria" and wino["answer"] == "2"
    hs = read_jsonl(hub_schema_file(mappings["hellaswag"]))
    assert hs[0]["activity_label"] == "Roof shingle removal"
    assert hs[0]["ctx_a"] == "A man is sitting on a roof. he" and hs[0]["ctx_b"] == ""
    assert hs[0]["endings"][3] == "starts pulling up roofing on a roof." and hs[0]["label"] == "3"
    assert hs[1]["activity_label"] == "Clean and jerk"
    assert all(len(d["endings"]) == 4 for d in hs)
    assert "capitalise" in (mappings["hellaswag"].note or "")


def test_converted_file_is_cached_by_content(tmp_path: Path, shared_data_dir: Path) -> None:
    src = shared_data_dir / "piqa"
    for name in ("valid.jsonl", "valid-labels.lst"):
        lines = (src / name).read_text(encoding="utf-8").splitlines()[:5]
        jsonl(tmp_path / name, lines)
    td = TaskData("piqa", tmp_path / "valid.jsonl", None, "piqa", (), "test")
    first = hub_schema_file(td)
    mtime = first.stat().st_mtime_ns
    assert hub_schema_file(td) == first and first.stat().st_mtime_ns == mtime
    jsonl(tmp_path / "valid-labels.lst", ["1", "1", "1", "1", "1"])  # labels change the key
    second = hub_schema_file(td)
    assert second != first and {d["label"] for d in read_jsonl(second)} == {1}


def test_bad_json_and_null_fields_name_file_and_line(tmp_path: Path) -> None:
    ok = '{"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}'
    bad = jsonl(tmp_path / "bad.jsonl", [ok, ok, '{"question": "q",'])
    td = TaskData("arc_easy", bad, "test", "jsonl", ("question",), "test")
    with pytest.raises(UserError, match=rf"^{bad}:3: not valid JSON \("):
        validate_task_data(td)
    null = jsonl(tmp_path / "null.jsonl", [ok, ok.replace('"A"}', "null}"), ok])
    td = TaskData("arc_easy", null, "test", "jsonl", ("question", "answerKey"), "test")
    with pytest.raises(UserError, match=rf"^{null}:2: field 'answerKey' is missing or null$"):
        validate_task_data(td)
    missing = jsonl(tmp_path / "missing.jsonl", [ok, '{"answerKey": "A"}'])
    td = TaskData("arc_easy", missing, "test", "jsonl", (), "test")
    with pytest.raises(UserError, match=rf"^{missing}:2: field 'question' is missing or null$"):
        validate_task_data(td, required=("question",))


def test_broken_converter_inputs_name_the_line(tmp_path: Path) -> None:
    hs = tmp_path / "hs.txt"
    hs.write_text("Act: ctx\n7\na\nb\nc\nd\n", encoding="utf-8")
    td = TaskData("hellaswag", hs, None, "hellaswag_text", (), "test")
    with pytest.raises(UserError, match=rf"^{hs}:2: label must be 0-3, got '7'$"):
        validate_task_data(td)
    hs.write_text("Act: ctx\n1\na\nb\n", encoding="utf-8")
    with pytest.raises(UserError, match="4 lines is not a multiple of 6"):
        hub_schema_file(td)
    piqa = jsonl(tmp_path / "valid.jsonl", ['{"goal": "g", "sol1": "a", "sol2": "b"}'] * 2)
    jsonl(tmp_path / "valid-labels.lst", ["0"])
    td = TaskData("piqa", piqa, None, "piqa", (), "test")
    with pytest.raises(UserError, match="valid-labels.lst: 1 labels for 2 items"):
        validate_task_data(td)


def test_json_array_is_rewritten_as_jsonl_and_its_errors_located(tmp_path: Path) -> None:
    docs = [{"question": "q1", "answerKey": "A"}, {"question": "q2", "answerKey": "B"}]
    arr = tmp_path / "items.json"
    arr.write_text(json.dumps(docs, indent=1))
    (tmp_path / "ecocompress-tasks.yaml").write_text(
        "my_task:\n  path: items.json\n  required: [question]\n  note: hand  made\n"
    )
    td = load_mappings(tmp_path)["my_task"]
    assert (td.format, td.split, td.note) == ("json", None, "hand made")
    assert validate_task_data(td) == 2
    assert read_jsonl(hub_schema_file(td)) == docs
    docs[1]["question"] = None
    arr.write_text(json.dumps(docs, indent=1))  # item 1 opens on line 6
    with pytest.raises(UserError, match=rf"^{arr}:6: field 'question' is missing or null$"):
        validate_task_data(td)


def test_flag_parsing(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "a.jsonl", ["{}"])
    assert parse_task_data_flag(f"arc_easy={f}") == ("arc_easy", f, None)
    assert parse_task_data_flag(f"arc_easy={f}:test") == ("arc_easy", f, "test")
    assert parse_task_data_flag("mmlu_anatomy=x.jsonl:test")[1] == Path.cwd() / "x.jsonl"
    for bad, msg in [
        ("arc_easy", "expected --task-data TASK=PATH"),
        ("=a.jsonl", "task name '' is not valid"),
        ("arc easy=a.jsonl", "task name 'arc easy' is not valid"),
        ("arc_easy=", "empty path"),
        ("arc_easy=a.jsonl:", "empty or invalid split ''"),
        ("arc_easy=:test", "empty path"),
        ("arc_easy=a.jsonl:dev-set", "invalid split 'dev-set'"),
    ]:
        with pytest.raises(UserError, match=msg) as exc:
            parse_task_data_flag(bad)
        assert "\n" not in str(exc.value)


def test_precedence_flags_over_data_dir_yaml_over_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "arc_easy").mkdir(parents=True)
    (data / "mine").mkdir()
    arc = jsonl(data / "arc_easy" / "ARC-Easy-test.hf_format.jsonl", ["{}"])
    mine = jsonl(data / "mine" / "arc.jsonl", ["{}"])
    flag = jsonl(tmp_path / "flag.jsonl", ["{}"])
    layout = load_mappings(data)
    assert set(layout) == {"arc_easy"}  # piqa, winogrande, hellaswag: files absent, skipped
    assert layout["arc_easy"].path == arc and layout["arc_easy"].origin == LAYOUT_ORIGIN
    (data / "ecocompress-tasks.yaml").write_text(
        "arc_easy: {path: mine/arc.jsonl}\nboolq: {path: mine/arc.jsonl, split: validation}\n"
    )
    user = load_mappings(data)
    assert user["arc_easy"].path == mine and user["arc_easy"].origin.endswith(
        "ecocompress-tasks.yaml"
    )
    assert user["arc_easy"].required == layout["arc_easy"].required  # inherited
    assert user["boolq"].split == "validation" and user["boolq"].required == ()
    flagged = load_mappings(data, (f"arc_easy={flag}:test",))
    assert flagged["arc_easy"].path == flag and flagged["arc_easy"].origin == "--task-data"
    assert flagged["arc_easy"].required == layout["arc_easy"].required
    assert flagged["boolq"].path == mine
    assert set(load_mappings(None, (f"piqa={flag}",))) == {"piqa"}
    with pytest.raises(UserError, match="task 'piqa' given twice"):
        load_mappings(None, (f"piqa={flag}", f"piqa={flag}"))
    with pytest.raises(UserError, match="file not found"):
        load_mappings(None, (f"piqa={tmp_path / 'nope.jsonl'}",))
    with pytest.raises(UserError, match="cannot tell the format of x.csv"):
        load_mappings(None, (f"piqa={jsonl(tmp_path / 'x.csv', ['a'])}",))


@pytest.mark.parametrize(
    ("entry", "msg"),
    [
        ("arc_easy: {pth: a.jsonl}", "arc_easy: unknown key 'pth' .*did you mean 'path'\\?"),
        ("arc_easy: {split: test}", "arc_easy: key 'path' is missing"),
        ("arc_easy: {path: nope.jsonl}", "arc_easy: path 'nope.jsonl' not found"),
        ("arc_easy: {path: a.jsonl, format: jsnl}", "unknown format 'jsnl' .*did you mean 'jsonl'"),
        ("arc_easy: {path: a.jsonl, required: question}", "'required' must be a list"),
        ("arc_easy: a.jsonl", "arc_easy: expected keys path"),
        ("arc_easy: {path: [a", r"ecocompress-tasks.yaml:\d+: not valid YAML \(expected"),
    ],
)
def test_mapping_errors_name_file_and_key(tmp_path: Path, entry: str, msg: str) -> None:
    jsonl(tmp_path / "a.jsonl", ["{}"])
    (tmp_path / "ecocompress-tasks.yaml").write_text(entry + "\n")
    with pytest.raises(UserError, match=msg) as exc:
        load_mappings(tmp_path)
    assert str(tmp_path / "ecocompress-tasks.yaml") in str(exc.value)
    assert "\n" not in str(exc.value)


def test_template_fields_of_installed_tasks() -> None:
    fields = {t: template_fields(task_config(lm_eval_task_dir() / y)) for t, y in TASK_YAML.items()}
    assert fields["arc_easy"] == ("answerKey", "choices", "question")
    assert fields["piqa"] == ("goal", "label", "sol1", "sol2")  # doc_to_target: label (bare)
    assert fields["winogrande"] == ()  # !function prompts: opaque
    assert fields["hellaswag"] == ()  # process_docs: templates read processed docs
    assert template_fields({"doc_to_text": "{% for x in range(n) %}{{x}}{% endfor %}"}) == ("n",)


def test_generated_yaml_registers_the_evaluated_split(
    mappings: dict[str, TaskData], tmp_path: Path
) -> None:
    base = lm_eval_task_dir() / TASK_YAML["piqa"]
    cfg = generated_task_yaml(mappings["piqa"], base, "piqa_local")
    assert cfg["include"] == str(base) and cfg["task"] == "piqa_local" and cfg["tag"] == []
    assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    assert cfg["dataset_kwargs"] == {
        "data_files": {"validation": str(hub_schema_file(mappings["piqa"]))}
    }
    # piqa evaluates validation and samples shots from train, which the local data lacks
    assert cfg["test_split"] == cfg["fewshot_split"] == "validation"
    assert cfg["training_split"] is None and cfg["validation_split"] is None
    wrong = TaskData("piqa", mappings["piqa"].path, "train", "piqa", (), "--task-data")
    with pytest.raises(
        UserError, match="as split 'train', but lm-eval's piqa evaluates split 'validation'"
    ):
        generated_task_yaml(wrong, base, "piqa_local")
    inline = tmp_path / "inline.yaml"
    inline.write_text(
        f"include: {base}\nfewshot_config:\n  samples: [{{goal: g, sol1: a, sol2: b, label: 0}}]\n"
    )
    cfg = generated_task_yaml(mappings["piqa"], inline, "piqa_inline")
    assert "fewshot_split" not in cfg and cfg["test_split"] == "validation"


@pytest.mark.slow
def test_lm_eval_loads_generated_tasks_offline(
    mappings: dict[str, TaskData], tmp_path: Path
) -> None:
    """lm-eval's TaskManager builds arc_easy and piqa from the local files (offline), and
    a few-shot context never holds the evaluated item (3 items, 2 shots: the other two).
    A control task that samples from the evaluated split without it being ``test_split``
    does draw the item itself: the reason the file is registered as the test split."""
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"
    from lm_eval.tasks import TaskManager

    tasks = tmp_path / "tasks"
    tasks.mkdir()

    def write(td: TaskData, name: str, local: str, **extra) -> None:
        cfg = generated_task_yaml(td, lm_eval_task_dir() / TASK_YAML[name], local)
        (tasks / f"{local}.yaml").write_text(json.dumps({**cfg, **extra}))

    write(mappings["arc_easy"], "arc_easy", "arc_easy_local")
    write(mappings["piqa"], "piqa", "piqa_local")
    docs = [{"goal": f"goal{i}", "sol1": "a", "sol2": "b", "label": 0} for i in range(3)]
    tiny = TaskData(
        "piqa",
        jsonl(tmp_path / "t.jsonl", [json.dumps(d) for d in docs]),
        None,
        "jsonl",
        (),
        "test",
    )
    write(tiny, "piqa", "piqa_tiny")
    write(tiny, "piqa", "piqa_leaky", test_split=None, validation_split="validation")
    names = ["arc_easy_local", "piqa_local", "piqa_tiny", "piqa_leaky"]
    loaded = TaskManager(include_path=str(tasks)).load(names)["tasks"]

    arc, piqa = loaded["arc_easy_local"], loaded["piqa_local"]
    assert len(arc.eval_docs) == EXPECTED_ITEMS["arc_easy"]
    assert len(piqa.eval_docs) == EXPECTED_ITEMS["piqa"]
    first_arc = read_jsonl(mappings["arc_easy"].path)[0]
    assert arc.doc_to_text(arc.eval_docs[0]) == f"Question: {first_arc['question']}\nAnswer:"
    assert arc.doc_to_target(arc.eval_docs[0]) == 0
    first_piqa = read_jsonl(hub_schema_file(mappings["piqa"]))[0]
    assert piqa.doc_to_text(piqa.eval_docs[0]) == f"Question: {first_piqa['goal']}\nAnswer:"

    def shots(task_name: str) -> list[list[int]]:
        task = loaded[task_name]
        task.set_fewshot_seed(0)
        ctxs = [task.fewshot_context(doc, num_fewshot=2) for doc in task.eval_docs]
        return [[int(g) for g in re.findall(r"goal(\d)", c)][:2] for c in ctxs]

    assert [sorted(s) for s in shots("piqa_tiny")] == [[1, 2], [0, 2], [0, 1]]
    assert any(i in s for i, s in enumerate(shots("piqa_leaky")))
