"""Benchmark declarations: readers, converters, the great-expectations gate, data files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks import REGISTRY, get_benchmark
from ecocompress.tasks.benchmarks.base import read_records
from ecocompress.tasks.benchmarks.bbh import BBH_TASKS
from ecocompress.tasks.benchmarks.local import local_task_dir
from ecocompress.tasks.benchmarks.validation import benchmark_data_files, validate_benchmark_data
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import EvalSpec

EXPECTED_ITEMS = {"gsm8k": 1319, "truthfulqa": 817, "commonsenseqa": 1221, "humaneval": 164}


def spec(name: str, **kw) -> EvalSpec:
    return EvalSpec(benchmark=name, **kw)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def broken_copy(data_dir: Path, tmp: Path, relpath: str, n: int, edit) -> Path:
    """Copy the first ``n`` lines of a JSONL file under ``tmp`` and apply ``edit`` to them."""
    src = data_dir / relpath
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    lines = edit([ln.rstrip("\n") for ln in lines])
    dst = tmp / relpath
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    dst.write_bytes(gzip.compress(data) if dst.suffix == ".gz" else data)
    return tmp


def set_field(lines: list[str], i: int, key: str, value) -> list[str]:
    doc = json.loads(lines[i])
    if value is KeyError:
        del doc[key]
    else:
        doc[key] = value
    lines[i] = json.dumps(doc)
    return lines


@pytest.mark.parametrize("name", sorted(EXPECTED_ITEMS))
def test_item_counts_match_the_data_readme(shared_data_dir: Path, name: str) -> None:
    bench = get_benchmark(name)
    (path,) = benchmark_data_files(spec(name), shared_data_dir)
    assert len(read_records(path, bench.reader, name)) == EXPECTED_ITEMS[name]


def test_bbh_has_250_boolean_expressions_and_6511_examples(shared_data_dir: Path) -> None:
    bench = get_benchmark("bbh")
    paths = benchmark_data_files(spec("bbh", bbh_tasks=BBH_TASKS), shared_data_dir)
    counts = {p.stem: len(read_records(p, bench.reader, p.name)) for p in paths}
    assert counts["boolean_expressions"] == 250
    assert sum(counts.values()) == 6511


def test_truthfulqa_converts_to_the_hub_schema(shared_data_dir: Path) -> None:
    bench = get_benchmark("truthfulqa")
    (path,) = benchmark_data_files(spec("truthfulqa"), shared_data_dir)
    rec = read_records(path, bench.reader, "tqa")[0]
    hub = bench.convert(rec.doc)
    assert set(hub) == {"question", "mc1_targets", "mc2_targets"}
    assert hub["mc1_targets"]["labels"][0] == 1 and sum(hub["mc1_targets"]["labels"]) == 1
    assert hub["mc2_targets"]["choices"] == list(rec.doc["mc2_targets"])
    assert len(hub["mc2_targets"]["labels"]) == len(hub["mc2_targets"]["choices"])
    assert rec.line == 2  # the array opens on line 1, the first item on line 2


def test_bbh_converts_to_input_target(shared_data_dir: Path) -> None:
    bench = get_benchmark("bbh")
    (path,) = benchmark_data_files(spec("bbh", bbh_tasks=("boolean_expressions",)), shared_data_dir)
    rec = read_records(path, bench.reader, "bbh")[0]
    assert bench.convert(rec.doc) == {"input": rec.doc["input"], "target": rec.doc["target"]}


def test_real_files_pass_the_gate(shared_data_dir: Path) -> None:
    for name in REGISTRY:
        validate_benchmark_data(spec(name), shared_data_dir)


@pytest.mark.parametrize(
    ("name", "relpath", "edit", "message"),
    [
        (
            "gsm8k",
            "gsm8k/test.jsonl",
            lambda ls: set_field(ls, 16, "answer", "forty-two"),
            "gsm8k/test.jsonl:17: field 'answer' does not end with '#### <number>'",
        ),
        (
            "gsm8k",
            "gsm8k/test.jsonl",
            lambda ls: set_field(ls, 3, "question", KeyError),
            "gsm8k/test.jsonl:4: field 'question' is missing or not a string",
        ),
        (
            "commonsenseqa",
            "commonsenseqa/validation.hf_format.jsonl",
            lambda ls: set_field(ls, 5, "answerKey", "F"),
            "commonsenseqa/validation.hf_format.jsonl:6: field 'answerKey' is not one of A, B, C, D, E",
        ),
        (
            "commonsenseqa",
            "commonsenseqa/validation.hf_format.jsonl",
            lambda ls: set_field(ls, 2, "choices", {"label": list("ABCD"), "text": list("abcd")}),
            "commonsenseqa/validation.hf_format.jsonl:3: field 'choices' must hold exactly 5 texts",
        ),
        (
            "humaneval",
            "humaneval/HumanEval.jsonl.gz",
            lambda ls: set_field(ls, 1, "entry_point", None),
            "humaneval/HumanEval.jsonl.gz:2: field 'entry_point' is missing or not a string",
        ),
        (
            "gsm8k",
            "gsm8k/test.jsonl",
            lambda ls: ls[:7] + ['{"question": "x", "answer": '] + ls[8:],
            "gsm8k/test.jsonl:8: not valid JSON (",
        ),
    ],
)
def test_broken_jsonl_names_file_line_and_field(
    shared_data_dir: Path, tmp_path: Path, name: str, relpath: str, edit, message: str
) -> None:
    data = broken_copy(shared_data_dir, tmp_path, relpath, 20, edit)
    with pytest.raises(UserError) as e:
        validate_benchmark_data(spec(name), data)
    assert str(e.value).startswith(message)


def test_truthfulqa_without_a_true_answer_is_reported_at_its_line(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    items = json.loads((shared_data_dir / "truthfulqa/data/v0/mc_task.json").read_text())[:3]
    items[2]["mc2_targets"] = {k: 0 for k in items[2]["mc2_targets"]}
    dst = tmp_path / "truthfulqa/data/v0/mc_task.json"
    dst.parent.mkdir(parents=True)
    text = json.dumps(items, indent=2)
    dst.write_text(text)
    line = text.splitlines().index("  {", 1 + text.splitlines().index("  {", 1 + 1)) + 1
    with pytest.raises(
        UserError, match=rf"mc_task.json:{line}: item 2: field 'mc2_targets' has no true answer"
    ):
        validate_benchmark_data(spec("truthfulqa"), tmp_path)


def test_bbh_empty_target_is_reported_with_its_item(shared_data_dir: Path, tmp_path: Path) -> None:
    doc = json.loads((shared_data_dir / "bbh/bbh/boolean_expressions.json").read_text())
    doc["examples"] = doc["examples"][:10]
    doc["examples"][7]["target"] = " "
    dst = tmp_path / "bbh/bbh/boolean_expressions.json"
    dst.parent.mkdir(parents=True)
    dst.write_text(json.dumps(doc))
    with pytest.raises(
        UserError, match=r"boolean_expressions.json:1: item 7: field 'target' is empty"
    ):
        validate_benchmark_data(spec("bbh", bbh_tasks=("boolean_expressions",)), tmp_path)


def test_missing_dir_and_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="benchmark data dir not found"):
        validate_benchmark_data(spec("gsm8k"), tmp_path / "nope")
    with pytest.raises(UserError, match=r"benchmark data file not found: .*gsm8k/test.jsonl"):
        validate_benchmark_data(spec("gsm8k"), tmp_path)


def test_unknown_bbh_task_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="did you mean 'boolean_expressions'"):
        benchmark_data_files(spec("bbh", bbh_tasks=("boolean_expresions",)), Path("/data"))


def test_data_files_follow_the_spec_and_are_empty_for_the_hub(shared_data_dir: Path) -> None:
    files = benchmark_data_files(spec("bbh", bbh_tasks=("navigate", "snarks")), shared_data_dir)
    assert [p.name for p in files] == ["navigate.json", "snarks.json"]
    assert all(p.is_file() for p in files)
    assert benchmark_data_files(spec("gsm8k"), None) == []


def test_local_task_dir_is_keyed_by_content(
    shared_data_dir: Path, tmp_path: Path, home: Path
) -> None:
    first = local_task_dir(shared_data_dir)
    assert local_task_dir(shared_data_dir) == first  # same files -> same folder
    names = {p.stem for p in first.glob("*.yaml")}
    assert {
        "ecocompress_gsm8k_cot",
        "ecocompress_truthfulqa_mc2",
        "ecocompress_humaneval_local",
    } <= names
    assert len([n for n in names if n.startswith("ecocompress_bbh_fewshot_")]) == 27
    cfg = json.loads((first / "ecocompress_truthfulqa_mc2.yaml").read_text())
    (derived,) = cfg["dataset_kwargs"]["data_files"].values()
    assert str(home) in derived and sum(1 for _ in open(derived)) == 817
    assert Path(cfg["include"]).is_file()

    data = broken_copy(shared_data_dir, tmp_path, "gsm8k/test.jsonl", 5, lambda ls: ls)
    other = local_task_dir(data)
    assert other != first and {p.stem for p in other.glob("*.yaml")} == {"ecocompress_gsm8k_cot"}
    (data / "gsm8k/test.jsonl").write_text(
        "\n".join((data / "gsm8k/test.jsonl").read_text().splitlines()[:4]) + "\n"
    )
    assert local_task_dir(data) != other  # edited data -> new folder
