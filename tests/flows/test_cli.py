"""The command line: fast --help, lean imports, settings from flags or YAML, and one-line
errors for bad input (in-process: no Python start-up per case)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecocompress.flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_help_lists_commands_and_examples():
    r = _run("--help")
    assert r.returncode == 0
    assert (
        "evaluate" in r.stdout
        and "sweep" in r.stdout
        and "ecocompress sweep --bits 16,8,4" in r.stdout
    )


def test_imports_stay_lean():
    code = (
        "import sys, ecocompress.flows.cli, ecocompress.flows.params, ecocompress.flows.resolve, "
        "ecocompress.tasks.specs, ecocompress.tasks.artifacts, ecocompress.metrics.types, "
        "ecocompress.metrics.pareto; "
        "heavy = {'torch', 'transformers', 'lm_eval', 'mlflow', 'prefect', 'codecarbon', "
        "'great_expectations', 'pymoo', 'plotly'} & set(sys.modules); print(sorted(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _main(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """``ecocompress ARGV`` in this process: exit status and output, as a subprocess gives."""
    from ecocompress.flows.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, rc, out.out, out.err)


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    err = [ln for ln in lines if ln.startswith("ecocompress: error:")]
    assert len(err) == 1, r.stderr
    for n in needles:
        assert n in err[0], err[0]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["evaluate", "--bits", "5"], ["bits 5 is not supported", "32, 16, 8, 4"]),
        (["sweep", "--bits", "16,x"], ["bits 'x' is not a valid int"]),
        (["evaluate", "--bits", "16,8"], ["evaluate takes one candidate", "use sweep"]),
        (["evaluate", "--limit", "abc"], ["limit", "valid integer"]),
        (["sweep", "--num-fewshot", "gsm8k"], ["use name=value pairs"]),
        (["sweep", "--config", "/no/spec.yaml"], ["--config /no/spec.yaml: no such file"]),
        (["optimize", "--sampler", "cmaes"], ["sampler", "'tpe' or 'nsga2'"]),
        (["evaluate", "--prune", "wanda", "--sparsity", "0.95"], ["sparsity 0.95 is out of range"]),
        (["evaluate", "--prune", "magnitude", "--pattern", "2/4"], ["pattern '2/4' is malformed"]),
        (
            ["evaluate", "--benchmarks", "gsm8k,truthfullqa"],
            ["unknown benchmark 'truthfullqa'", "did you mean 'truthfulqa'"],
        ),
        (["evaluate", "--limit", "-5"], ["limit -5 must be a positive number"]),
        (
            ["evaluate", "--benchmarks", "perplexity", "--objectives", "accuracy:max"],
            ["objective 'accuracy' needs a benchmark scored as a fraction of items"],
        ),
        (
            ["sweep", "--benchmarks", "bbh", "--objectives", "perplexity/wikitext2:min"],
            ["'perplexity/wikitext2' is not measured", "they log exact_match/bbh"],
        ),
        (
            ["sweep", "--benchmarks", "bbh", "--objectives", "accuracy/bbh"],
            ["logged under their own metric now, e.g. 'exact_match/bbh'"],
        ),
        (
            ["sweep", "--benchmarks", "ai2_arc"],
            ["'ai2_arc' is an lm-eval tag", "name its tasks"],
        ),
        (
            ["sweep", "--benchmarks", "arc_easy", "--task-data", "gsm8k=x.jsonl"],
            ["task_data names 'gsm8k', which is not among the benchmarks run"],
        ),
        (
            ["sweep", "--benchmarks", "gsm8k", "--task-data", "gsm8k=x.jsonl"],
            ["task_data names 'gsm8k', a curated benchmark"],
        ),
        (
            ["sweep", "--benchmarks", "arc_easy", "--include-path", "/no/such/tasks"],
            ["include path /no/such/tasks does not exist"],
        ),
        (
            ["evaluate", "--ppl-window", "128", "--ppl-stride", "256"],
            ["must not exceed ppl_window"],
        ),
        (["sweep", "--noise-z", "0"], ["noise_z", "greater than 0"]),
        (["evaluate", "--data-dir", "/no/such/dir"], ["data_dir /no/such/dir does not exist"]),
        (["evaluate", "--benchmarks", "humaneval"], ["--allow-code-execution"]),
        (["optimize", "--policy", "bayes"], ["unknown policy 'bayes'", "agent, optuna"]),
        (["optimize", "--weights", "accuracy=1,speed=2"], ["unknown metric 'speed'"]),
        (["optimize", "--weights", "accuracy"], ["malformed"]),
        (["optimize", "--profile", "phone"], ["unknown profile 'phone'", "edge, cloud"]),
        (["optimize", "--accuracy-drop", "150"], ["accuracy_drop", "less than or equal to 100"]),
        (["optimize", "--max-candidates", "0"], ["max_candidates", "greater than or equal to 1"]),
        (["optimize", "--memory-limit", "-1"], ["memory_limit", "greater than 0"]),
        (["optimize", "--policy", "llm"], ["policy llm needs --llm"]),
        (
            ["optimize", "--policy", "llm", "--llm", "x:y", "--multi-fidelity"],
            ["--multi-fidelity works with policies agent, optuna, random, grid"],
        ),
        (["study", "rq5"], ["unknown study 'rq5'", "rq1, rq2"]),
        (["study", "rq1", "--replay", "/no/grid.json"], ["--replay /no/grid.json: no such file"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needles, capsys):
    _assert_one_line_error(_main(argv, capsys), *needles)


def test_a_bad_flag_exits_2_from_a_real_process():
    """The in-process cases above, checked once end to end through the interpreter."""
    _assert_one_line_error(_run("evaluate", "--bits", "5"), "bits 5 is not supported")


def test_yaml_spec_and_flags_give_the_same_specs(tmp_path, shared_data_dir):
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import resolve

    spec = tmp_path / "weekly.yaml"
    spec.write_text(
        "benchmarks: [commonsenseqa, perplexity]\nlimit: 10\nbits: [16, 8]\n"
        "num-fewshot: {commonsenseqa: 2}\npolicy: optuna\nmulti_fidelity: true\n"
        f"data_dir: {shared_data_dir}\n"
    )
    flags = [
        "--benchmarks", "commonsenseqa,perplexity", "--limit", "10", "--bits", "16,8",
        "--num-fewshot", "commonsenseqa=2", "--policy", "optuna", "--multi-fidelity",
        "--data-dir", str(shared_data_dir),
    ]  # fmt: skip
    a = resolve("optimize", parse_settings("optimize", ["--config", str(spec)]))
    b = resolve("optimize", parse_settings("optimize", flags))
    assert a.run == b.run and a.candidates == b.candidates and a.settings == b.settings
    # a flag overrides the file
    c = resolve("optimize", parse_settings("optimize", ["--config", str(spec), "--limit", "4"]))
    assert c.run.limit == 4 and c.settings.base_limit == 4


def test_yaml_spec_with_an_unknown_setting_names_the_closest(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("limt: 10\n")
    r = _main(["sweep", "--config", str(spec)], capsys)
    _assert_one_line_error(r, "unknown setting 'limt' for sweep", "did you mean 'limit'")


def test_multi_fidelity_adds_perplexity_and_recomputes_the_objectives(shared_data_dir):
    from ecocompress.flows.resolve import resolve

    r = resolve(
        "optimize",
        {"benchmarks": "commonsenseqa", "multi_fidelity": True, "data_dir": str(shared_data_dir)},
    )
    assert r.run.benchmarks == ("commonsenseqa", "perplexity")
    assert "perplexity/wikitext2:min" in r.run.objectives
    assert r.settings.fidelities and r.settings.max_candidates is None


def test_defaults_come_from_the_models():
    """A flag's help shows the model's default: the one place it is declared."""
    from ecocompress.flows.cli import build_parser
    from ecocompress.flows.params import RunParams
    from ecocompress.flows.search_params import SearchParams

    text = build_parser()._subparsers._group_actions[0].choices["optimize"].format_help()
    assert f"(default {RunParams.model_fields['batch_size'].default})" in text
    assert f"(default {SearchParams.model_fields['accuracy_drop'].default})" in text
    assert "--no-register" in text


@pytest.mark.slow
def test_unknown_model_offline(shared_data_dir, tmp_path):
    r = _run(
        "evaluate",
        "--model",
        "nobody-xyz/not-a-model",
        "--data-dir",
        str(shared_data_dir),
        "--limit",
        "1",
        env={"HF_HUB_OFFLINE": "1", "ECOCOMPRESS_HOME": str(tmp_path)},
    )
    _assert_one_line_error(r, "nobody-xyz/not-a-model", "offline")


@pytest.mark.slow
def test_malformed_data_line_names_file_line_and_field(shared_data_dir, tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    lines = (shared_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:5]
    lines[2] = lines[2].replace('"answer"', '"answr"')
    (data / "gsm8k" / "test.jsonl").write_text("\n".join(lines) + "\n")
    r = _run(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data-dir",
        str(data),
        "--benchmarks",
        "gsm8k",
        "--limit",
        "1",
        env={"ECOCOMPRESS_HOME": str(tmp_path / "home")},
    )
    _assert_one_line_error(r, "test.jsonl:3", "answer")
