"""Run folders never lose or mix results (issue 14): which run `--resume` takes, a
changed config, foreign folders, concurrent runs, runs killed early, torn or corrupt
files, impossible paths, names that are paths, processes that never arrive.

The fast tests stop before anything is compiled; those that train (a 200-point PyEPO
slice, one epoch, a few seconds each) are marked slow.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

import perturbed_layers as pl
from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _run_folder as files, _run_guard as guard

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
PYEPO = CONFIGS / "pyepo_shortest_path.yaml"
TINY = ["data.num_data=200", "data.test_size=100", "training.epochs=1"]


def _config_copy(folder: pathlib.Path, name: str) -> pathlib.Path:
    path = folder / f"{name}.yaml"
    path.write_text(PYEPO.read_text())
    return path


def _train(config, *args: str) -> int:
    return ex.main(["train", str(config), "--no-progress", *TINY, *args])


def _fake_run(folder: pathlib.Path, name: str = "exp") -> pathlib.Path:
    folder.mkdir(parents=True)
    marker = {"format": guard.FORMAT, "name": name, "created": "x", "resumes": []}
    (folder / guard.MARKER).write_text(json.dumps(marker))
    return folder


# ------------------------------------------------------ 1. which run --resume takes


def test_runs_of_matches_exactly_the_config_name(tmp_path):
    runs = tmp_path / "runs"
    old = _fake_run(runs / "exp-20260101-100000")
    same_second = _fake_run(runs / "exp-20260101-100000-2")
    _fake_run(runs / "exp-lr-20260301-100000")  # a longer name, newer: not exp's
    _fake_run(runs / "exp-20260102-100000", name="exp").rename(runs / "exp-notastamp")
    (runs / "exp-20260201-100000").mkdir()  # not a run of ours (no run.json)
    assert guard.runs_of("exp", runs) == [old, same_second]
    assert guard.runs_of("exp-lr", runs) == [runs / "exp-lr-20260301-100000"]


def test_default_run_folder_never_reuses_a_folder(tmp_path):
    first = guard.default_run_folder("exp", tmp_path)
    first.mkdir()
    second = guard.default_run_folder("exp", tmp_path)
    assert second != first and second.name.startswith(first.name)


def test_resume_without_out_refuses_a_longer_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "exp-lr-20260101-100000", name="exp-lr")
    assert _train(_config_copy(tmp_path, "exp"), "--resume") == 2
    assert "no run of 'exp' in runs/" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_takes_the_newest_run_of_exactly_that_name(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    exp, exp_lr = _config_copy(tmp_path, "exp"), _config_copy(tmp_path, "exp-lr")
    assert _train(exp_lr) == 0
    assert _train(exp) == 0
    (lr_run,) = (tmp_path / "runs").glob("exp-lr-*")
    (exp_run,) = guard.runs_of("exp", tmp_path / "runs")
    lr_metrics = (lr_run / "metrics.jsonl").read_bytes()
    # exp-lr is the newer folder, and its glob-twin: it must not be touched.
    os.utime(lr_run, (2e9, 2e9))
    assert (
        _train(
            exp, "--resume", "training.epochs=2", "--allow-change", "training.epochs"
        )
        == 0
    )
    assert (lr_run / "metrics.jsonl").read_bytes() == lr_metrics
    said = f"--resume: the newest of 1 run(s) of 'exp': runs/{exp_run.name}"
    assert said in capsys.readouterr().err
    records, _ = files.read_metrics(exp_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]


# ---------------------------------------------------------- 2. a changed config


def test_changed_keys_are_named_with_both_values():
    saved = {"training": {"epochs": 4, "seed": 0}, "layer": {"sigma": 1.0}}
    new = {"training": {"epochs": 8, "seed": 1}, "layer": {"sigma": 1.0}, "x": 2}
    changes = guard.config_changes(saved, new)
    assert changes == {
        "training.epochs": (4, 8),
        "training.seed": (0, 1),
        "x": ("<absent>", 2),
    }
    with pytest.raises(guard.RunFolderError) as info:
        guard.check_changes(changes, ["training.epochs"], "runs/r")
    message = str(info.value)
    assert "training.seed: 0 in the run, 1 now" in message
    assert "x: '<absent>' in the run, 2 now" in message
    assert "training.epochs" not in message  # allowed
    with pytest.raises(guard.RunFolderError, match=r"--allow-change training\.seed"):
        guard.check_changes(changes, ["training.seed"], "runs/r")  # not a safe one
    guard.check_changes({"training.epochs": (4, 8)}, ["training.epochs"], "runs/r")


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused_unless_allowed(tmp_path, capsys):
    config, out = _config_copy(tmp_path, "exp"), tmp_path / "run"
    assert _train(config, "--out", str(out)) == 0

    def contents():  # the run's files (run.lock names its latest holder)
        return {p.name: p.read_bytes() for p in out.iterdir() if p.name != "run.lock"}

    before = contents()
    status = _train(
        config, "--out", str(out), "--resume", "optimizer.learning_rate=0.5",
        "training.epochs=2",
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "optimizer.learning_rate: 0.01 in the run, 0.5 now" in err
    assert "training.epochs: 1 in the run, 2 now" in err
    assert "--allow-change training.epochs" in err
    assert contents() == before  # nothing rewritten
    allow = ["--allow-change", "training.epochs"]
    assert (
        _train(config, "--out", str(out), "--resume", "training.epochs=2", *allow) == 0
    )
    marker = json.loads((out / "run.json").read_text())
    assert marker["resumes"][-1]["changes"] == {"training.epochs": {"was": 1, "now": 2}}
    assert marker["resumes"][-1]["from_epoch"] == 1
    records, _ = files.read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]


# ------------------------------------------------------ 3. folders of something else


def test_out_into_a_foreign_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _config_copy(tmp_path, "exp")
    text = config.read_text()
    assert _train(config, "--out", ".") == 2
    err = capsys.readouterr().err
    assert "not a perturbed-layers run (exp.yaml)" in err
    assert config.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # no lock left
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    assert _train(config, "--out", str(data), "--resume") == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]


def test_a_folder_that_holds_a_run_needs_resume(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    assert _train(_config_copy(tmp_path, "exp"), "--out", str(run)) == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(_config_copy(tmp_path, "exp"), "--out", str(empty), "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err


# ------------------------------------------------------------- 4. one run at a time


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    first = guard.open_run(out, resume=False)
    try:
        with pytest.raises(guard.RunFolderError, match=f"pid {os.getpid()} on"):
            guard.open_run(out, resume=False)
        assert _train(_config_copy(tmp_path, "exp"), "--out", str(out)) == 2
        assert "is in use by another run" in capsys.readouterr().err
    finally:
        first.close()
    assert not out.exists()  # a run that never wrote leaves nothing
    guard.open_run(out, resume=False).close()  # free again


@pytest.mark.slow
def test_a_killed_run_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import pathlib, sys, time
                from perturbed_layers.experiments import _run_guard as guard
                run = guard.open_run(pathlib.Path({str(out)!r}), resume=False)
                run.start("exp")
                print("locked", flush=True)
                time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(guard.RunFolderError, match=f"pid {holder.pid}"):
            guard.open_run(out, resume=True)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    guard.open_run(out, resume=True).close()


# ------------------------------------------------- 5. killed before the first checkpoint


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(
    tmp_path, capsys
):
    config = _config_copy(tmp_path, "exp")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _train(config, "--out", str(whole)) == 0
    assert _train(config, "--out", str(cut)) == 0
    # The state of a run killed between epoch 0's metrics line and its checkpoint.
    first = (cut / "metrics.jsonl").read_text().splitlines()[0]
    (cut / "metrics.jsonl").write_text(first + "\n")
    for name in ("checkpoint.eqx", "summary.json", "curves.png", "examples.png"):
        (cut / name).unlink()
    capsys.readouterr()
    assert _train(config, "--out", str(cut)) == 2  # not without --resume
    assert "already holds a run" in capsys.readouterr().err
    assert _train(config, "--out", str(cut), "--resume") == 0
    assert "starting it again from the beginning" in capsys.readouterr().out

    def untimed(folder):
        records, _ = files.read_metrics(folder / "metrics.jsonl")
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]

    assert untimed(cut) == untimed(whole)


# ------------------------------------------ 6. torn, truncated, corrupt, impossible


def test_a_torn_last_metrics_line_is_reported_and_left_out(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "a": 1}\n{"epoch": 1, "a": 2}\n{"epoch": 2, "a"')
    records, torn = files.read_metrics(path)
    assert [r["epoch"] for r in records] == [0, 1]
    assert torn is not None and "line 3 was torn" in torn and str(path) in torn
    path.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')  # not at the end
    with pytest.raises(files.RunFileError, match=r"metrics\.jsonl: line 2 is not"):
        files.read_metrics(path)


@pytest.mark.slow
def test_resume_repairs_a_torn_metrics_line(tmp_path, capsys):
    config, out = _config_copy(tmp_path, "exp"), tmp_path / "run"
    assert _train(config, "--out", str(out)) == 0
    with open(out / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 2, "train_lo')  # killed mid-write
    allow = ["--allow-change", "training.epochs"]
    assert (
        _train(config, "--out", str(out), "--resume", "training.epochs=2", *allow) == 0
    )
    assert "line 3 was torn" in capsys.readouterr().out
    records, torn = files.read_metrics(out / "metrics.jsonl")
    assert torn is None and [r["epoch"] for r in records] == [0, 1, 2]


def _small_state():
    model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    opt_state = optax.adam(1e-3).init(eqx.filter(model, eqx.is_inexact_array))
    return model, opt_state, jax.random.key(1)


def test_checkpoint_errors_name_the_file_and_the_cause(tmp_path):
    model, opt_state, key = _small_state()
    path = tmp_path / "checkpoint.eqx"
    files.save_checkpoint(path, model, opt_state, 3, key)
    loaded, _, epoch, *_ = files.load_checkpoint(path, model, opt_state, key)
    assert epoch == 3
    np.testing.assert_array_equal(loaded.weight, model.weight)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 10])  # killed mid-copy
    with pytest.raises(files.RunFileError, match="truncated checkpoint") as info:
        files.load_checkpoint(path, model, opt_state, key)
    assert str(path) in str(info.value) and "changed model" not in str(info.value)
    path.write_bytes(whole[:100] + b"\0" * 50 + whole[150:])  # a corrupt header
    with pytest.raises(files.RunFileError, match="corrupt or truncated"):
        files.load_checkpoint(path, model, opt_state, key)
    path.write_bytes(b"")
    with pytest.raises(files.RunFileError, match="holds 0 arrays"):
        files.load_checkpoint(path, model, opt_state, key)
    path.write_bytes(whole)  # whole, but for another model
    other = eqx.nn.Linear(4, 2, key=jax.random.key(0))
    other_state = optax.adam(1e-3).init(eqx.filter(other, eqx.is_inexact_array))
    with pytest.raises(files.RunFileError, match=r"array \d+ of \d+ is float32"):
        files.load_checkpoint(path, other, other_state, key)
    with pytest.raises(files.RunFileError, match="no checkpoint"):
        files.load_checkpoint(tmp_path / "absent.eqx", model, opt_state, key)


def test_checkpoint_holds_the_solution_pool(tmp_path):
    model, opt_state, key = _small_state()
    paths = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], np.float32)
    pool = pl.SolutionPool.from_solutions(paths, capacity=5, when_full="keep")
    path = tmp_path / "checkpoint.eqx"
    files.save_checkpoint(path, model, opt_state, 2, key, pool)
    # The template is an empty pool of the config's capacity, shape and dtype.
    template = pl.SolutionPool.empty(5, (4,), np.float32, when_full="keep")
    *_, epoch, _, loaded = files.load_checkpoint(path, model, opt_state, key, template)
    assert epoch == 2 and int(loaded.size) == 3 and loaded.when_full == "keep"
    np.testing.assert_array_equal(loaded.solutions, pool.solutions)
    # A pool of another capacity, or none, does not fit: the message says which.
    other = pl.SolutionPool.empty(6, (4,), np.float32)
    with pytest.raises(
        files.RunFileError, match=r"loss state .* need float32 \(6, 4\)"
    ):
        files.load_checkpoint(path, model, opt_state, key, other)
    with pytest.raises(files.RunFileError, match="changed model, optimizer or loss"):
        files.load_checkpoint(path, model, opt_state, key)
    # Without a pool, a checkpoint is the same file as before pools existed.
    files.save_checkpoint(path, model, opt_state, 2, key)
    old = tmp_path / "old.eqx"
    eqx.tree_serialise_leaves(
        old, (model, opt_state, np.asarray(2, np.int64), jax.random.key_data(key))
    )
    assert path.read_bytes() == old.read_bytes()


@pytest.mark.slow
def test_evaluate_on_a_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    config = ex.load_config(PYEPO, TINY)
    (run / "config.yaml").write_text(ex.dump_config(config))
    (run / "checkpoint.eqx").write_bytes(b"\x93NUMPY\x01\x00garbage")
    assert ex.main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint.eqx'}: corrupt or truncated" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "where", ["file/run", "/dev/null/run", "/proc/perturbed-layers-test/run"]
)
def test_an_impossible_output_path_is_a_clear_error(tmp_path, capsys, where):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / where if not where.startswith("/") else pathlib.Path(where)
    assert _train(_config_copy(tmp_path, "exp"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write the run folder" in err
    file_out = tmp_path / "file"
    assert _train(_config_copy(tmp_path, "exp"), "--out", str(file_out)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. names are names


@pytest.mark.parametrize(
    "name", ["/abs/path", "../up", "a/b", ".hidden", "''", "x" * 101]
)
def test_a_run_name_cannot_be_a_path(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    assert _train(_config_copy(tmp_path, "exp"), f"name={name}") == 2
    assert "name: a run name is a name, not a path" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


# ------------------------------------------------- 8. processes that never arrive


@pytest.mark.slow
def test_a_process_waiting_for_others_says_so_and_times_out():
    code = textwrap.dedent("""
        from perturbed_layers.experiments import _parallel as parallel
        options = parallel.DistributedOptions(
            initialize=True, coordinator_address="127.0.0.1:{port}",
            num_processes=2, process_id=0, timeout=2,
        )
        parallel.initialize_distributed(options, "c.yaml")
        print("joined: should not happen")
    """)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", code.format(port=port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"process 0 of 2, coordinator 127.0.0.1:{port}: waiting up to 2 s" in (
        result.stdout
    )
    assert "not every process arrived within 2 s (distributed.timeout)" in (
        result.stderr
    )
    assert "joined" not in result.stdout


# ------------------------------------------------------------------ progress output


@pytest.mark.slow
def test_no_progress_bar_updates_outside_a_terminal(tmp_path, capsys, monkeypatch):
    import io

    config = ex.load_config(PYEPO, [*TINY, "training.steps_per_call=1"])
    ex.train(config, tmp_path / "log", progress=True, log=lambda _: None)
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is not a terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    ex.train(config, tmp_path / "tty", progress=True, log=lambda _: None)
    assert "\r" in terminal.getvalue()  # the bar is there on a terminal
