"""Data- and sample-parallel training over the devices of one host or many.

Two config groups, both optional:

```yaml
mesh:
  data: auto        # devices the batch is split over ("auto": all of them / samples)
  samples: 1        # devices the M Monte-Carlo samples of each instance are split over
distributed:
  initialize: auto  # call jax.distributed.initialize? auto: when a cluster is detected
  coordinator_address: null   # host:port of process 0 (null: from the environment)
  num_processes: null
  process_id: null
  timeout: 300      # seconds to wait for every process to arrive
```

**Mesh.** Training runs on a `data × samples` device mesh (`jax.make_mesh`, axes
`("data", "samples")`). Each step's batch is split over `data`: every device computes
θ, the perturbed layer and the loss for its rows, and XLA all-reduces the gradient of
the (replicated) parameters. With `samples > 1` the layer splits its M samples over
`samples` (`sample_axis=`), reducing with one more all-reduce. One device is the same
program on a 1 × 1 mesh. Noise is drawn from the same keys whatever the mesh
(`jax.random` is sharding-invariant), so a run gives the same result, to float
rounding, on any number of devices.

**Processes.** With several processes (`jax.distributed`), every process builds the
same dataset from the config (generated from the seed, or read from the same files),
and places on its own devices only its rows of each batch: the epoch's batches are a
global array assembled with `jax.make_array_from_callback`, whose callback each process
runs for its addressable shards alone. Parameters and optimiser state are replicated;
process 0 alone writes the run folder; every process evaluates the test set on its
first device, and so reports the same metrics.

**Cluster detection.** With `initialize: auto`, `jax.distributed.initialize` is called
when the config or `JAX_COORDINATOR_ADDRESS` names a coordinator, or the environment is
a multi-task SLURM step (`srun`), an Open MPI job, or a multi-host Cloud TPU slice
(`TPU_WORKER_HOSTNAMES` lists several hosts); JAX then reads the missing values from
that environment. `initialize: true` always calls it, for any environment JAX itself
knows; `false` never does.

**Waiting.** Joining prints who this process is and whom it waits for; if the others
have not all arrived after `distributed.timeout` seconds, the process stops with an
error that says so (JAX's own time-out aborts the process from C++ with a stack
trace, so ours comes first), and every 30 seconds before that it says it is still
waiting.
"""

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from pydantic import BaseModel, ConfigDict, Field

from ._options import PositiveInt
from ._tasks import Batch

DATA, SAMPLES = "data", "samples"


class MeshOptions(BaseModel):
    """`mesh:` how the devices are laid out for training (not a registry)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    data: PositiveInt | Literal["auto"] = Field(
        default="auto",
        description="devices the batch is split over (auto: all devices / samples)",
    )
    samples: PositiveInt = Field(
        default=1, description="devices each instance's M samples are split over"
    )


class DistributedOptions(BaseModel):
    """`distributed:` multi-process training with `jax.distributed` (not a registry)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    initialize: bool | Literal["auto"] = Field(
        default="auto",
        description="call jax.distributed.initialize (auto: if a coordinator is "
        "given or SLURM, Open MPI or a multi-host TPU slice is detected)",
    )
    coordinator_address: str | None = Field(
        default=None, description="host:port of process 0 (null: from the environment)"
    )
    num_processes: PositiveInt | None = Field(
        default=None, description="number of processes (null: from the environment)"
    )
    process_id: int | None = Field(
        default=None,
        ge=0,
        description="this process's index (null: from the environment)",
    )
    timeout: PositiveInt = Field(
        default=300,
        description="seconds to wait for every process to join before stopping with "
        "an error",
    )


def cluster_detected(environ: Mapping[str, str] = os.environ) -> str | None:
    """The multi-process environment this process runs in, if any (for `auto`)."""
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in environ for k in slurm) and _count(environ.get("SLURM_NTASKS")) > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in environ and (
        _count(environ.get("OMPI_COMM_WORLD_SIZE")) > 1
    ):
        return "Open MPI"
    if len(environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
        return "Cloud TPU"
    return None


def _count(text: str | None) -> int:
    try:
        return int(text or "1")
    except ValueError:
        return 1


def _watch(event: threading.Event, who: str, timeout: int) -> None:
    """Until `event` is set: say every 30 s that `who` is still waiting; after
    `timeout` seconds, stop the process with an error (exit status 2)."""
    start = time.monotonic()
    while not event.wait(min(30.0, max(timeout - (time.monotonic() - start), 0.0))):
        waited = time.monotonic() - start
        if waited >= timeout:
            print(
                f"error: distributed: {who}: not every process arrived within "
                f"{timeout} s (distributed.timeout). Check that all were started, "
                "with the same coordinator address and number of processes, and "
                "that the coordinator's port is reachable.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(2)  # the main thread is blocked inside JAX's C++ client
        print(f"distributed: {who}: still waiting ({waited:.0f} s)", file=sys.stderr)


def initialize_distributed(
    options: DistributedOptions, source: str, log: Callable[[str], None] = print
) -> bool:
    """Call `jax.distributed.initialize` if the options or the environment ask for
    it (before any JAX computation); return whether the run is multi-process.

    While it waits for the other processes, a watchdog says so and, after
    `options.timeout` seconds, ends the process with a clear error."""
    given = {
        "coordinator_address": options.coordinator_address,
        "num_processes": options.num_processes,
        "process_id": options.process_id,
    }
    wanted = options.initialize
    if wanted == "auto":
        wanted = options.coordinator_address is not None or bool(cluster_detected())
    if not wanted or jax.distributed.is_initialized():
        return jax.process_count() > 1
    address = options.coordinator_address or os.environ.get(
        "JAX_COORDINATOR_ADDRESS", "the address the environment gives"
    )
    who = (
        f"process {_or_env(options.process_id)} of {_or_env(options.num_processes)}, "
        f"coordinator {address}"
    )
    log(
        f"distributed: {who}: waiting up to {options.timeout} s for the other "
        "processes to join"
    )
    arrived = threading.Event()
    watchdog = threading.Thread(
        target=_watch, args=(arrived, who, options.timeout), daemon=True
    )
    watchdog.start()
    try:
        # JAX's own limit comes after ours: it aborts the process without a message.
        jax.distributed.initialize(
            **{k: v for k, v in given.items() if v is not None},
            initialization_timeout=options.timeout + 30,
        )
    except (RuntimeError, ValueError, TypeError) as error:
        set_keys = ", ".join(
            f"distributed.{k}" for k, v in given.items() if v is not None
        ) or (f"none set; detected: {cluster_detected() or 'no cluster'}")
        raise ValueError(
            f"distributed: jax.distributed.initialize failed ({set_keys}): {error}"
        ) from None
    finally:
        arrived.set()
    log(f"distributed: all {jax.process_count()} processes joined")
    return jax.process_count() > 1


def _or_env(value: int | None) -> str:
    return "(from the environment)" if value is None else str(value)


def make_mesh(
    options: MeshOptions, *, batch_size: int, num_samples: int, chunk_size: int | None
) -> Mesh:
    """The `("data", "samples")` mesh for training.

    **Raises:** `ValueError` starting with the config key at fault.
    """
    devices = jax.devices()
    count = len(devices)
    samples = options.samples
    if options.data == "auto":
        if count % samples:
            raise ValueError(
                f"mesh.samples: {samples} does not divide the {count} devices "
                "(set mesh.data too, to use fewer devices)"
            )
        data = count // samples
    else:
        data = options.data
    if data * samples > count:
        raise ValueError(
            f"mesh: data × samples = {data} × {samples} needs {data * samples} "
            f"devices; there are {count}"
        )
    if data * samples < count and jax.process_count() > 1:
        raise ValueError(
            f"mesh: data × samples = {data * samples} devices, but with "
            f"{jax.process_count()} processes the mesh must use all {count}"
        )
    if batch_size % data:
        hint = " (mesh.data: auto uses every device; set it lower)" * (
            options.data == "auto"
        )
        raise ValueError(
            f"training.batch_size: {batch_size} is not divisible by mesh.data = "
            f"{data}{hint}"
        )
    per_call = chunk_size if chunk_size is not None else num_samples
    if per_call % samples:
        what = "layer.chunk_size" if chunk_size is not None else "layer.num_samples"
        raise ValueError(
            f"{what}: {per_call} is not divisible by mesh.samples = {samples}"
        )
    return jax.make_mesh(
        (data, samples),
        (DATA, SAMPLES),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices[: data * samples],
    )


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(tree: Any) -> Any:
    """The arrays of `tree` as NumPy arrays on this host (keys as key data).

    Replicated or fully addressable arrays are read locally; others are gathered
    from every process (`process_allgather`, which all processes must call)."""

    def get(x: Any) -> Any:
        if _is_key(x):
            x = jax.random.key_data(x)
        if not isinstance(x, jax.Array):
            return np.asarray(x) if eqx.is_array(x) else x
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put the arrays of `tree` (the same on every process) on every device of
    `mesh`; keys stay keys."""
    sharding = NamedSharding(mesh, P())

    def put(x: Any) -> Any:
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        if not eqx.is_array(x):
            return x
        host = to_host(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(put, tree, is_leaf=_is_key)


def local_copy(tree: Any) -> Any:
    """A copy of `tree` on this process's first device (for evaluation)."""
    return jax.device_put(to_host(tree), jax.local_devices()[0])


def epoch_batches(train: Batch, order: np.ndarray, mesh: Mesh) -> Batch:
    """The epoch's batches `train[order]`, shape `(steps, batch_size, ...)`, each
    batch split over the mesh's `data` axis. Each process gathers and transfers only
    the rows its own devices hold."""
    sharding = NamedSharding(mesh, P(None, DATA))

    def put(a: Any) -> jax.Array:
        def shard(index: Any) -> np.ndarray:
            rows = order[index[0], index[1]]
            return a[rows][(slice(None), slice(None), *index[2:])]

        shape = (*order.shape, *a.shape[1:])
        return jax.make_array_from_callback(shape, sharding, shard)

    return Batch(*(put(a) for a in train))


def is_main_process() -> bool:
    """Process 0: the one that logs and writes the run folder."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait for every process (a no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
