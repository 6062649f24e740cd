"""Training throughput on 1, 2 and 4 devices, and the sharded path's cost on one.

```bash
python bench/devices.py            # ≈ 6 minutes on 2 CPU cores
python bench/devices.py --quick    # ≈ 2 minutes
```

Issue 7 asks for two figures, both measured on the training step the CLI runs
(`perturbed_layers.experiments.train_step`, with its per-epoch batch placement):

1. **Examples per second on 1, 2 and 4 devices.** One process with four forced CPU
   devices (`--xla_force_host_platform_device_count=4`) times an epoch slice of the
   step on `data × 1` meshes of 1, 2 and 4 of them, interleaved.
2. **Overhead of the sharded path on one device.** A process with one device times
   the same slice on the 1 × 1 mesh (what the CLI runs: replicated parameters, the
   epoch's batches assembled with `make_array_from_callback`, `jax.set_mesh`) against
   plain arrays with no mesh.

Two workloads: the README's quickstart (Warcraft 12×12, conv net, batch 32, M = 3; compute
bound) and the PyEPO 5×5 shortest path (linear model, batch 32, M = 3; per-step overhead
bound). Forced CPU devices share the machine's cores: on a 2-core machine four of them
cannot be more than about twice as fast as one, and one device already uses both
cores for its convolutions; the figures measure the overhead and scaling of the
sharded program, not what separate accelerators would give.

Writes `bench/results/devices-<date>-<device>.{json,md}` (or `--out DIR`).
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import _common as common

WORKLOADS = {
    "quickstart (Warcraft 12×12, conv net)": (
        "quickstart.yaml",
        ["data.num_train=640", "data.num_test=50"],
    ),
    "PyEPO 5×5 (linear model)": (
        "pyepo_shortest_path.yaml",
        ["data.num_data=1100", "data.test_size=100"],
    ),
}


def child(spec: dict[str, Any]) -> None:
    """Time the training step on each mesh of `spec` (run in a fresh process)."""
    common.setup_path()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from perturbed_layers import experiments as ex
    from perturbed_layers.experiments import _parallel as parallel

    config = ex.load_config(common.REPO_ROOT / "configs" / spec["config"], spec["ov"])
    exp = ex.build(config)
    batch = config.training.batch_size
    rows = parallel.to_host(exp.dataset.train)
    n = rows.x.shape[0]
    steps = min(spec["steps"], n // batch)
    order = np.random.default_rng(0).permutation(n)[: steps * batch]
    order = order.reshape(steps, batch).astype(np.int32)
    key = jax.random.fold_in(exp.key, 1)

    def epoch(model, opt_state, batches, key):
        # Both workloads' losses (Fenchel-Young) carry no state: None in its place.
        for step in range(steps):
            model, opt_state, _, value = ex.train_step(
                model, opt_state, None, exp.loss, exp.optimizer, batches,
                np.int32(step), key,
            )  # fmt: skip
        return value

    fns = {}
    for data in spec["meshes"]:
        mesh = parallel.make_mesh(
            parallel.MeshOptions(data=data),
            batch_size=batch,
            num_samples=exp.layer.num_samples,
            chunk_size=exp.layer.chunk_size,
        )
        state = parallel.replicate((exp.model, exp.opt_state, key), mesh)

        def sharded(mesh=mesh, state=state):
            with jax.set_mesh(mesh):
                return epoch(*state[:2], parallel.epoch_batches(rows, order, mesh), key)

        fns[f"{data} device(s)"] = sharded
    if spec["plain"]:

        def plain():
            batches = ex.Batch(*(jnp.asarray(a[order]) for a in rows))
            return epoch(exp.model, exp.opt_state, batches, key)

        fns["no mesh"] = plain
    timing = common.time_interleaved(
        fns, repeats=spec["repeats"], min_sample_s=0.3, min_repeats=spec["repeats"]
    )
    per = timing["per_contender"]
    common.report_child(
        {
            "devices": jax.device_count(),
            "steps": steps,
            "batch_size": batch,
            "examples_per_s": {
                name: batch * steps / s["median"] for name, s in per.items()
            },
            "time_s": per,
        }
    )


def _run(label: str, config: str, ov: list[str], devices: int, **spec: Any) -> dict:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    print(f"  {label}: {devices} forced device(s) ...", flush=True)
    result = common.run_child(
        Path(__file__), {"config": config, "ov": ov, **spec}, timeout=1800
    )
    if "error" in result:
        raise RuntimeError(f"{label}: {result['error']}\n{result.get('stderr_tail')}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--mem-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mem_child:
        return child(json.loads(args.mem_child))
    repeats, steps = (3, 6) if args.quick else (7, 20)
    results: dict[str, Any] = {"env": common.env_info(), "load_avg_start": None}
    results["load_avg_start"] = common.load_avg()
    rows_scaling, rows_overhead = [], []
    for label, (config, ov) in WORKLOADS.items():
        scaling = _run(
            label, config, ov, 4, meshes=[1, 2, 4], plain=False,
            repeats=repeats, steps=steps,
        )  # fmt: skip
        overhead = _run(
            label, config, ov, 1, meshes=[1], plain=True, repeats=repeats, steps=steps
        )
        results[label] = {"scaling": scaling, "overhead": overhead}
        eps = scaling["examples_per_s"]
        one = eps["1 device(s)"]
        rows_scaling.append(
            [label]
            + [
                f"{eps[f'{d} device(s)']:,.0f} ({eps[f'{d} device(s)'] / one:.2f}×)"
                for d in (1, 2, 4)
            ]
        )
        t = overhead["time_s"]
        ratio = common.paired_ratio(
            t["1 device(s)"]["samples"], t["no mesh"]["samples"]
        )
        results[label]["overhead_ratio"] = ratio
        rows_overhead.append(
            [
                label,
                common.fmt_summary(t["no mesh"]),
                common.fmt_summary(t["1 device(s)"]),
                f"{ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}]",
            ]
        )
    results["load_avg_end"] = common.load_avg()
    tag = f"{common.today()}-{results['env']['device']['platform']}"
    tag += "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / f"devices-{tag}.json", results)
    text = "\n\n".join(
        [
            f"# Training throughput on several devices: {tag}",
            f"`python bench/devices.py{' --quick' if args.quick else ''}`; "
            f"{steps} steps of batch 32 per sample, medians of {repeats} interleaved "
            f"repetitions [min, max]; load average {results['load_avg_start']} at "
            f"start, {results['load_avg_end']} at end. Forced CPU devices share "
            "the machine's cores (see `bench/devices.py`).",
            "## Examples per second (× one device), data-parallel, one process",
            common.markdown_table(
                ["workload", "1 device", "2 devices", "4 devices"], rows_scaling
            ),
            "## The sharded path on one device: time per epoch slice",
            common.markdown_table(
                ["workload", "no mesh", "1 × 1 mesh (CLI)", "mesh / no mesh"],
                rows_overhead,
            ),
        ]
    )
    (args.out / f"devices-{tag}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
