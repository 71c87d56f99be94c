"""Bad input that points at files or at an earlier run: refused in one line, exit 2, before
any server is contacted (flows/preflight.py runs before flows.stack.connect)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.flows.test_cli import _assert_one_line_error


@pytest.fixture
def no_server(monkeypatch):
    """``connect`` (the first step that contacts or prepares a server) records its calls."""
    import ecocompress.flows.stack as stack

    calls: list[bool] = []

    def connect(quiet: bool = False):
        calls.append(quiet)
        raise RuntimeError("connect() reached: the input was not refused up front")

    monkeypatch.setattr(stack, "connect", connect)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return calls


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(h))
    return h


def _refused(argv: list[str], capsys, calls: list[bool], *needles: str) -> str:
    """Run ``ecocompress ARGV`` in-process; assert a one-line refusal before any server."""
    from ecocompress.flows.cli import main

    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr()
    r = subprocess.CompletedProcess(argv, rc, out.out, out.err)
    _assert_one_line_error(r, *needles)
    assert calls == [], "a server was contacted before the refusal"
    assert elapsed < 10, f"refused after {elapsed:.1f} s"
    return r.stderr


def _data(shared: Path) -> list[str]:
    return ["--data-dir", str(shared), "--limit", "1"]


# --- --thread-id reused with other evaluation settings ---------------------------------


def _start_thread(thread: str, argv: list[str]) -> None:
    """Checkpoint a thread as ``optimize ARGV`` starts it (the graph's first step only)."""
    from ecocompress.agents.graph import build_graph, sqlite_checkpointer
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.optimize import checkpoint_path
    from ecocompress.flows.resolve import resolve

    r = resolve("optimize", parse_settings("optimize", argv))
    graph = build_graph(sqlite_checkpointer(str(checkpoint_path())))
    graph.invoke(
        {"settings": r.settings.model_dump(mode="json"), "run": r.run.model_dump(mode="json")},
        {"configurable": {"thread_id": thread}},
    )


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        (["--benchmarks", "commonsenseqa,perplexity"], "benchmarks"),
        (["--country", "FRA"], "country"),
        (["--batch-size", "8"], "batch_size"),
    ],
)
def test_thread_reused_with_other_run_settings_is_refused(
    changed, field, home, shared_data_dir, capsys, no_server
):
    base = [*_data(shared_data_dir), "--benchmarks", "commonsenseqa", "--max-candidates", "2"]
    _start_thread("t1", base)
    err = _refused(
        ["optimize", *base, *changed, "--thread-id", "t1"],
        capsys,
        no_server,
        "thread 't1' was started with other settings",
        field,
    )
    assert "pass a new --thread-id" in err


def test_thread_resumed_with_the_same_command_passes_the_check(home, shared_data_dir):
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.preflight import preflight
    from ecocompress.flows.resolve import resolve

    base = [*_data(shared_data_dir), "--benchmarks", "commonsenseqa", "--max-candidates", "2"]
    _start_thread("t2", base)
    preflight(resolve("optimize", parse_settings("optimize", [*base, "--thread-id", "t2"])))


def test_resumed_parent_run_with_other_params_is_refused(shared_data_dir):
    """Threads checkpointed before the evaluation settings were stored: checked against the
    parent run's ``run_params`` param when it is re-opened."""
    from ecocompress.flows.params import RunParams
    from ecocompress.flows.sweep import _check_resumed_params
    from ecocompress.tasks.errors import UserError

    old = RunParams(data_dir=str(shared_data_dir), country="USA")
    new = RunParams(data_dir=str(shared_data_dir), country="FRA", batch_size=8)
    tags = {"optimize_thread_id": "t3"}
    _check_resumed_params(old.canonical(), old, tags)  # the same: resumed
    with pytest.raises(UserError, match=r"'t3'.*\(batch_size, country differ\)"):
        _check_resumed_params(old.canonical(), new, tags)


# --- experiment names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("../x", "must be a plain name, not a path"),
        ("/tmp/elsewhere", "must be a plain name, not a path"),
        ("..", "must be a plain name, not a path"),
        ("x" * 500, "500 characters long: at most 200"),
        ("a\nb", "control characters"),
    ],
)
def test_experiment_name_must_be_a_plain_name(name, needle, shared_data_dir, capsys, no_server):
    _refused(["evaluate", *_data(shared_data_dir), "--experiment", name], capsys, no_server, needle)


def test_default_experiment_of_a_dot_folder_is_its_own_name(tmp_path, monkeypatch):
    from ecocompress.flows.params import RunParams

    monkeypatch.chdir(tmp_path)
    assert RunParams(model=".").experiment_name() == tmp_path.name
    assert RunParams(model="org/name").experiment_name() == "name"
    assert RunParams(model="x", experiment="mine").experiment_name() == "mine"


# --- combinations that make no candidate ----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--bits", "4", "--quant-backend", "torchao"],
        ["sweep", "--bits", "8,4", "--quant-backend", "torchao"],
        ["optimize", "--bits", "4", "--quant-backend", "torchao"],
    ],
)
def test_bits_no_backend_can_make_is_refused(argv, shared_data_dir, capsys, no_server):
    _refused(
        [*argv, *_data(shared_data_dir)],
        capsys,
        no_server,
        "--bits 4 with --quant-backend torchao makes no candidate",
        "torchao here is int8 weight-only",
    )


def test_a_grid_that_skips_a_pair_but_covers_every_bits_value_is_kept(shared_data_dir):
    from ecocompress.flows.resolve import resolve

    r = resolve(
        "sweep",
        {"bits": "8,4", "quant_backend": "bitsandbytes,torchao", "data_dir": str(shared_data_dir)},
    )
    pairs = {(c.quant.bits, c.quant.backend) for c in r.candidates}
    assert pairs == {(8, "bitsandbytes"), (8, "torchao"), (4, "bitsandbytes")}


# --- benchmark data -------------------------------------------------------------------


def test_non_utf8_benchmark_data_names_the_file(tmp_path, shared_data_dir, capsys, no_server):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    lines = (shared_data_dir / "gsm8k" / "test.jsonl").read_bytes().splitlines()[:3]
    lines[1] = lines[1].replace(b"a", b"\xff", 1)
    (data / "gsm8k" / "test.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _refused(
        ["evaluate", "--data-dir", str(data), "--benchmarks", "gsm8k", "--limit", "1"],
        capsys,
        no_server,
        "gsm8k/test.jsonl is not UTF-8 text",
    )


def test_corrupt_gzip_data_names_the_file(tmp_path, capsys, no_server):
    data = tmp_path / "data"
    (data / "wikitext2").mkdir(parents=True)
    full = gzip.compress(b"some text\n" * 1000)
    (data / "wikitext2" / "wiki.test.raw.gz").write_bytes(full[: len(full) // 2])
    _refused(
        ["evaluate", "--data-dir", str(data), "--benchmarks", "perplexity", "--limit", "1"],
        capsys,
        no_server,
        "wikitext2/wiki.test.raw.gz cannot be read",
    )


def test_missing_benchmark_file_is_refused_up_front(tmp_path, capsys, no_server):
    (tmp_path / "data").mkdir()
    _refused(
        ["evaluate", "--data-dir", str(tmp_path / "data"), "--benchmarks", "gsm8k"],
        capsys,
        no_server,
        "benchmark data file not found",
        "gsm8k",
    )


def test_data_gate_reader_refuses_non_utf8(tmp_path):
    """The flow's own reader (the data gate) says the same, should a file change later."""
    from ecocompress.tasks.benchmarks.base import read_records
    from ecocompress.tasks.errors import UserError

    f = tmp_path / "x.jsonl"
    f.write_bytes(b'{"q": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"x.jsonl is not UTF-8 text .* at byte 10"):
        read_records(f, "jsonl", "x.jsonl")


# --- model files ----------------------------------------------------------------------


def _model_folder(root: Path, config: bytes | None = None) -> Path:
    from safetensors.numpy import save_file

    root.mkdir(parents=True)
    (root / "config.json").write_bytes(config or b'{"model_type": "gemma3_text"}')
    save_file({"w": np.zeros((64, 64), dtype=np.float32)}, str(root / "model.safetensors"))
    return root


def _gguf(path: Path) -> Path:
    """A small valid GGUF: a string and an array of strings, two f32 tensors."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("a", np.ones((32, 32), dtype=np.float32))
    w.add_tensor("b", np.ones((16,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_valid_model_files_pass(tmp_path):
    from ecocompress.tasks.download import check_model

    check_model(str(_model_folder(tmp_path / "m")))
    check_model(str(_gguf(tmp_path / "m.gguf")))


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (b'{"model_type": "gemma3_text",', "config.json is not valid JSON"),
        (b"[1, 2]", "config.json must hold a JSON object"),
        (b'{"name": "caf\xe9"}', "config.json is not valid JSON"),
    ],
)
def test_bad_config_json_names_the_file(
    config, needle, tmp_path, shared_data_dir, capsys, no_server
):
    m = _model_folder(tmp_path / "m", config)
    _refused(["evaluate", "--model", str(m), *_data(shared_data_dir)], capsys, no_server, needle)


def test_truncated_safetensors_names_the_file(tmp_path, shared_data_dir, capsys, no_server):
    m = _model_folder(tmp_path / "m")
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    _refused(
        ["evaluate", "--model", str(m), *_data(shared_data_dir)],
        capsys,
        no_server,
        "model.safetensors is truncated",
    )


def test_garbage_gguf_names_the_file(tmp_path, shared_data_dir, capsys, no_server):
    g = tmp_path / "junk.gguf"
    g.write_bytes(bytes(range(256)) * 8)
    _refused(
        ["evaluate", "--model", str(g), *_data(shared_data_dir)],
        capsys,
        no_server,
        "junk.gguf is not a GGUF file",
    )


@pytest.mark.parametrize(
    ("cut", "needle"),
    [(-8, "is truncated: its tensors need"), (40, "is truncated (its GGUF header")],
)
def test_truncated_gguf_names_the_file(cut, needle, tmp_path, shared_data_dir, capsys, no_server):
    g = _gguf(tmp_path / "m.gguf")
    data = g.read_bytes()
    g.write_bytes(data[:cut])
    _refused(
        ["evaluate", "--model", str(g), *_data(shared_data_dir)],
        capsys,
        no_server,
        "m.gguf",
        needle,
    )


def test_gguf_header_with_absurd_counts_is_malformed(tmp_path):
    from ecocompress.tasks.errors import UserError
    from ecocompress.tasks.model_files import check_gguf

    g = tmp_path / "x.gguf"
    g.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0))
    with pytest.raises(UserError, match="malformed GGUF header"):
        check_gguf(g)


def test_unknown_hub_model_offline_is_refused_up_front(
    shared_data_dir, capsys, no_server, monkeypatch
):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    _refused(
        ["evaluate", "--model", "nobody-xyz/not-a-model", *_data(shared_data_dir)],
        capsys,
        no_server,
        "nobody-xyz/not-a-model",
        "offline",
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--country", "ZZZ"], "unknown country 'ZZZ'"),
        (["--objectives", "accuracy:max,speed:min"], "unknown objective 'speed'"),
    ],
)
def test_settings_checked_in_the_flow_before_are_refused_up_front(
    argv, needle, shared_data_dir, capsys, no_server
):
    _refused(["sweep", *_data(shared_data_dir), *argv], capsys, no_server, needle)


# --- ui --port ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "needle"), [("99999", "port 99999 is out of range 1 to 65535"), ("0", "port 0")]
)
def test_ui_port_out_of_range(port, needle, capsys, no_server):
    _refused(["ui", "--port", port], capsys, no_server, needle)


def test_valid_input_reaches_connect(shared_data_dir, capsys, no_server):
    """The fixture's guard itself: input that is fine goes on to connect()."""
    from ecocompress.flows.cli import main

    rc = main(["evaluate", *_data(shared_data_dir), "--benchmarks", "commonsenseqa"])
    assert rc == 1 and no_server == [False]
    assert "connect() reached" in capsys.readouterr().err


def test_truncated_gguf_message_gives_the_sizes(tmp_path):
    """The message gives sizes the user can check with ls -l."""
    from ecocompress.tasks.errors import UserError
    from ecocompress.tasks.model_files import check_gguf

    g = _gguf(tmp_path / "m.gguf")
    size = g.stat().st_size
    g.write_bytes(g.read_bytes()[: size - 8])
    with pytest.raises(UserError, match=rf"need \d+ bytes, the file has {size - 8}$"):
        check_gguf(g)
