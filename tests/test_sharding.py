"""Several devices and processes, on CPU, in subprocesses (the device count is fixed
when JAX starts): sharded inputs and sample parallelism in the layers and the loss,
then data- and sample-parallel training on four forced devices and on two processes
joined by `jax.distributed`, each against one device."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

from perturbed_layers.experiments._parallel import cluster_detected

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYEPO = ROOT / "configs" / "pyepo_shortest_path.yaml"
# Two short epochs of the PyEPO config; M = 4 so that it splits over 2 or 4 devices.
SMALL = [
    "data.num_data=500",
    "data.test_size=100",
    "training.epochs=2",
    "layer.num_samples=4",
]

SCRIPT = textwrap.dedent(
    """
    import functools, re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import perturbed_layers as pl

    assert jax.device_count() == 4
    mesh = jax.make_mesh((2, 2), ("data", "samples"), axis_types=(AxisType.Auto,) * 2)
    key = jax.random.key(2)

    def uniform(seed, shape, low, high):
        return jax.random.uniform(jax.random.key(seed), shape, minval=low, maxval=high)

    def run(layer, t, y_true, v):
        loss = pl.FenchelYoungLoss(layer)
        def f(t, k):
            fwd, vjp = jax.value_and_grad(lambda u: jnp.sum(layer(u, key=k) * v))(t)
            val, grad = jax.value_and_grad(lambda u: loss(u, y_true, key=k).sum())(t)
            return fwd, vjp, val, grad
        return jax.jit(f)(t, key), jax.jit(f).lower(t, key).compile().as_text()

    def batch_collectives(hlo):
        # Collectives whose result is not a scalar (or a tuple of scalars): with the
        # batch sharded, only sums over it (the loss) and loop conditions may cross
        # devices.
        op = r"(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)"
        pattern = re.compile(r"=\\s*(\\(.*?\\)|\\S+)\\s+" + op + r"(-start)?\\(")
        found = (pattern.search(line) for line in hlo.splitlines())
        return [m.group(0) for m in found if m and re.search(r"\\[\\d", m.group(1))]

    grid = pl.PerturbedShortestPath(
        num_samples=8, sigma=0.1, noise=pl.Normal(), perturbation="multiplicative"
    )
    pyepo = pl.Perturbed(
        functools.partial(pl.solvers.pyepo_shortest_path, m=5),
        objective="min", event_ndim=1, shift_invariant=True,
        num_samples=8, sigma=1.0, noise=pl.Normal(),
    )
    graph = pl.PerturbedGraphShortestPath(
        source=0, target=5, num_samples=8, sigma=0.1, noise=pl.Normal(),
        perturbation="multiplicative",
    )
    v = jax.random.normal(jax.random.key(1), (8, 6))
    problems = {  # layer, θ or costs, a target solution, a cotangent
        "argmax": (
            pl.PerturbedArgmax(num_samples=64, sigma=0.5, noise=pl.Gumbel()),
            jax.random.normal(jax.random.key(0), (8, 6)),
            pl.solvers.argmax_one_hot(v),
            v,
        ),
        "grid shortest path": (
            grid,
            uniform(3, (8, 12, 12), 0.5, 2.0),
            pl.solvers.grid_shortest_path(uniform(4, (8, 12, 12), 0.5, 2.0)),
            uniform(5, (8, 12, 12), -1.0, 1.0),
        ),
        "pyepo shortest path": (
            pyepo,
            uniform(6, (8, 40), 0.1, 2.0),
            pl.solvers.pyepo_shortest_path(uniform(7, (8, 40), 0.1, 2.0), m=5),
            uniform(8, (8, 40), -1.0, 1.0),
        ),
        "graph shortest path": (
            graph,
            uniform(9, (8, 6, 6), 0.5, 2.0),
            pl.solvers.shortest_path(uniform(10, (8, 6, 6), 0.5, 2.0), 0, 5),
            uniform(11, (8, 6, 6), -1.0, 1.0),
        ),
    }

    def check(name, out, reference):
        for a, b in zip(out, reference):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        print(name, "ok")

    # The batch over all four devices (a mesh with an idle axis would leave XLA free
    # to shard other dimensions over it).
    data_mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    with jax.set_mesh(data_mesh):
        batch = NamedSharding(data_mesh, P("data"))
        for name, (layer, t, y_true, v) in problems.items():
            reference, _ = run(layer, t, y_true, v)
            out, hlo = run(layer, jax.device_put(t, batch), y_true, v)
            assert "all-gather" not in hlo, name
            assert not batch_collectives(hlo), (name, batch_collectives(hlo))
            assert out[1].sharding.spec == P("data"), (name, out[1].sharding)
            check(f"{name}, batch sharded", out, reference)
        # Large draws go a block of samples at a time (here blocks of 8 samples):
        # still no collective over the batch.
        from perturbed_layers import _estimator
        _estimator._BLOCKED_FROM, _estimator._BLOCK = 0, 8 * 8 * 6
        layer, t, y_true, v = problems["argmax"]
        out, hlo = run(layer, jax.device_put(t, batch), y_true, v)
        assert not batch_collectives(hlo), batch_collectives(hlo)
        _estimator._BLOCKED_FROM, _estimator._BLOCK = 2**22, 2**18
        check("argmax in blocks, batch sharded", out, run(layer, t, y_true, v)[0])
    # Samples split over a mesh axis, alone and with the batch sharded.
    with jax.set_mesh(mesh):
        batch = NamedSharding(mesh, P("data"))
        layer, t, y_true, v = problems["argmax"]
        reference, _ = run(layer, t, y_true, v)
        split = pl.PerturbedArgmax(
            num_samples=64, sigma=0.5, noise=pl.Gumbel(), sample_axis="samples"
        )
        chunked = pl.PerturbedArgmax(
            num_samples=64, sigma=0.5, noise=pl.Gumbel(), sample_axis="samples",
            chunk_size=16,
        )
        for name, layer, t in [
            ("samples split", split, t),
            ("both, chunked", chunked, jax.device_put(t, batch)),
        ]:
            out, hlo = run(layer, t, y_true, v)
            assert "all-reduce" in hlo, name
            check(name, out, reference)
    """
)


def _run(args: list[str], devices: int = 1, **kwargs) -> subprocess.CompletedProcess:
    flags = f"--xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags)
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=900, **kwargs
    )


@pytest.mark.slow
def test_sharded_equals_single_device():
    result = _run([sys.executable, "-c", SCRIPT], devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 7, result.stdout


TRAINING = textwrap.dedent(
    """
    import json, pathlib, sys, tempfile
    import jax, numpy as np
    from perturbed_layers import experiments as ex
    from perturbed_layers.experiments import _run_folder as files

    assert jax.device_count() == 4
    PYEPO, SMALL = sys.argv[1], sys.argv[2:]
    tmp = pathlib.Path(tempfile.mkdtemp())

    def run(name, *overrides, resume=False):
        config = ex.load_config(PYEPO, [*SMALL, *overrides])
        # Resuming on another layout with more epochs changes those two keys only.
        allow = ("mesh.data", "training.epochs") if resume else ()
        ex.train(
            config, tmp / name, resume=resume, progress=False, log=lambda m: None,
            allow_changes=allow,
        )
        exp = ex.build(config)
        model, *_ = files.load_checkpoint(
            tmp / name / files.CHECKPOINT, exp.model, exp.opt_state, exp.key
        )
        metrics, _ = files.read_metrics(tmp / name / files.METRICS)
        return metrics, jax.tree.leaves(model)

    def same(name, got, reference):
        (metrics, params), (ref_metrics, ref_params) = got, reference
        assert [m["epoch"] for m in metrics] == [0, 1, 2], (name, metrics)
        for record, ref in zip(metrics[1:], ref_metrics[1:]):
            # Parameters and losses agree to float rounding (the sums over the batch
            # are split differently); the regret counts argmin solutions, which a
            # rounding-level change of θ can flip on a near tie: one instance in 100
            # moves it by about 0.001.
            np.testing.assert_allclose(record["train_loss"], ref["train_loss"], rtol=1e-4)
            np.testing.assert_allclose(
                record["test_normalized_regret"], ref["test_normalized_regret"],
                atol=3e-3, err_msg=name,
            )
        for a, b in zip(params, ref_params):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
        print(name, "ok")

    reference = run("one device", "mesh.data=1")
    same("batch over 4", run("batch over 4", "mesh.data=4"), reference)
    same("default (all devices)", run("default"), reference)
    same("2 x 2", run("2 x 2", "mesh.data=2", "mesh.samples=2"), reference)
    same("samples over 4", run("samples over 4", "mesh.data=1", "mesh.samples=4"), reference)
    # Epoch 1 on four devices, resumed for epoch 2 on two: a checkpoint holds plain
    # arrays, not shardings.
    run("resumed", "mesh.data=4", "training.epochs=1")
    same("resumed on 2 of 4", run("resumed", "mesh.data=2", resume=True), reference)

    for overrides, words in [
        (["mesh.data=3"], "training.batch_size: 32 is not divisible by mesh.data = 3"),
        (["mesh.samples=3"], "mesh.samples: 3 does not divide the 4 devices"),
        (["mesh.data=1", "mesh.samples=3"], "layer.num_samples: 4 is not divisible"),
        (["mesh.data=8"], "mesh: data × samples = 8 × 1 needs 8 devices; there are 4"),
    ]:
        config = ex.load_config(PYEPO, [*SMALL, *overrides])
        try:
            ex.train(config, tmp / "bad", progress=False, source="C.yaml")
        except ex.ConfigError as error:
            assert f"C.yaml: {words}" in str(error), (overrides, str(error))
        else:
            raise AssertionError(f"{overrides}: no error")
        assert not (tmp / "bad").exists()
    print("errors ok")
    """
)


@pytest.mark.slow
def test_training_on_four_devices_equals_one_device():
    result = _run([sys.executable, "-c", TRAINING, str(PYEPO), *SMALL], devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 6, result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(out: pathlib.Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "perturbed_layers", "train", str(PYEPO), "--out",
        str(out), "--no-progress", *SMALL, *overrides,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """Two processes on 127.0.0.1 (one CPU device each), joined by
    `jax.distributed`, each feeding its half of every batch: the same metrics as one
    process on one device; process 0 alone writes the run folder and logs."""
    port = _free_port()
    multi = tmp_path / "two"
    coordinator = f"distributed.coordinator_address=127.0.0.1:{port}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [
        subprocess.Popen(
            _cli(
                multi,
                coordinator,
                "distributed.num_processes=2",
                f"distributed.process_id={i}",
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert "2 cpu device(s), 2 processes (batch over 2)" in outputs[0][0]
    assert "epoch" not in outputs[1][0]  # process 1 is silent
    single = tmp_path / "one"
    result = _run(_cli(single))
    assert result.returncode == 0, result.stderr[-3000:]

    def metrics(folder):
        return [
            json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()
        ]

    got, want = metrics(multi), metrics(single)
    assert [r["epoch"] for r in got] == [0, 1, 2]
    for record, ref in zip(got, want, strict=True):
        for name in ("train_loss", "test_normalized_regret"):
            if name in ref:
                assert record[name] == pytest.approx(ref[name], rel=1e-4, abs=3e-3)
    assert (multi / "summary.json").exists() and (multi / "checkpoint.eqx").exists()


@pytest.mark.parametrize(
    "environ, found",
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
        (
            dict(
                SLURM_JOB_ID="1",
                SLURM_STEP_NODELIST="n[1-2]",
                SLURM_PROCID="0",
                SLURM_LOCALID="0",
                SLURM_NTASKS="2",
            ),
            "SLURM",
        ),
        # One task (e.g. an interactive allocation): nothing to join.
        (
            dict(
                SLURM_JOB_ID="1",
                SLURM_STEP_NODELIST="n1",
                SLURM_PROCID="0",
                SLURM_LOCALID="0",
                SLURM_NTASKS="1",
            ),
            None,
        ),
        ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}, None),  # sbatch, not srun
        ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "Cloud TPU"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU VM
    ],
)
def test_cluster_detection(environ, found):
    assert cluster_detected(environ) == found


@pytest.mark.slow
def test_failed_initialize_names_the_keys(tmp_path):
    result = _run(_cli(tmp_path / "run", "distributed.initialize=true"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "distributed: jax.distributed.initialize failed" in result.stderr
    assert "coordinator_address should be defined" in result.stderr
    assert not (tmp_path / "run").exists()
