"""Warcraft-style terrain maps: a procedural generator, and a loader for the real files.

Layout (that of the Warcraft shortest-path dataset of Vlastelica et al., 2020): for k × k
maps, `maps` is `(N, 8k, 8k, 3)` uint8 (8 pixels per cell), `vertex_weights` is
`(N, k, k)` float32 with the five terrain costs {0.8, 1.2, 5.3, 7.7, 9.2}, and
`shortest_paths` is `(N, k, k)` 0/1 float32: a minimum-cost path from the top-left to
the bottom-right cell with 8-connectivity, the cost of a path being the sum of the costs
of its cells (`pl.solvers.grid_shortest_path`).

Generation, per map (vectorised over maps, NumPy only):
- a smooth random field (white noise blurred with a Gaussian of width k/6 cells, then
  standardised) cut at per-map jittered quantiles into grass (1.2), forest (5.3) and
  mountains (7.7); a second, independent field gives lakes (9.2) where it is high;
- one or two roads (0.8): random walks that cross the map, drawn over everything;
- each terrain is rendered with its own texture: sandy ruts (road), speckled grass,
  round tree crowns (forest), grey peaks with snow (mountains), waves (water), plus
  pixel noise and per-map and per-cell brightness, so that colour alone is ambiguous.
"""

import pathlib

import jax.numpy as jnp
import numpy as np

import perturbed_layers as pl

TERRAIN_COSTS = np.array([0.8, 1.2, 5.3, 7.7, 9.2], np.float32)
TERRAIN_NAMES = ("road", "grass", "forest", "mountains", "water")
CELL = 8  # pixels per cell


def _smooth_field(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    width = max(k / 6, 1.0)
    pad = int(3 * width) + 1
    noise = rng.standard_normal((n, k + 2 * pad, k + 2 * pad))
    g = np.exp(-0.5 * (np.arange(-pad, pad + 1) / width) ** 2)
    g /= g.sum()
    rows = np.zeros((n, k, k + 2 * pad))  # a separable Gaussian blur, cropped
    for i in range(2 * pad + 1):
        rows += g[i] * noise[:, i : i + k, :]
    z = np.zeros((n, k, k))
    for i in range(2 * pad + 1):
        z += g[i] * rows[:, :, i : i + k]
    z -= z.mean(axis=(1, 2), keepdims=True)
    return z / z.std(axis=(1, 2), keepdims=True)


def _roads(rng: np.random.Generator, terrain: np.ndarray) -> None:
    """Draw up to two roads (class 0) per map, in place: walks from the left or top
    edge that step towards the opposite edge, sideways now and then."""
    n, k, _ = terrain.shape
    rows = np.arange(n)
    for road in range(2):
        active = rng.random(n) < (0.9 if road == 0 else 0.5)
        vertical = rng.random(n) < 0.5  # start on the top edge, walk down
        along = np.zeros(n, int)
        across = rng.integers(0, k, n)
        for _ in range(3 * k):
            i = np.where(vertical, along, across)
            j = np.where(vertical, across, along)
            ok = active & (along < k)
            terrain[rows[ok], i[ok], j[ok]] = 0
            step = rng.random(n)
            forward = step < 0.6
            along = along + forward
            across = np.clip(
                across + np.where(step < 0.8, 0, np.sign(step - 0.9)), 0, k - 1
            )
            across = across.astype(int)


def generate_terrain(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Terrain classes (indices into `TERRAIN_COSTS`), shape (n, k, k), int8."""
    height = _smooth_field(rng, n, k)
    wet = _smooth_field(rng, n, k)
    # Per-map thresholds around the N(0, 1) quantiles 0.55 and 0.85 of the field.
    t1 = 0.13 + rng.uniform(-0.35, 0.35, (n, 1, 1))
    t2 = 1.04 + rng.uniform(-0.3, 0.3, (n, 1, 1))
    terrain = np.where(height < t1, 1, np.where(height < t2, 2, 3))
    lakes = 1.3 + rng.uniform(-0.3, 0.5, (n, 1, 1))
    terrain = np.where(wet > lakes, 4, terrain).astype(np.int8)
    _roads(rng, terrain)
    return terrain


_BASE = np.array(
    [[190, 165, 115], [95, 150, 60], [40, 100, 42], [125, 115, 105], [45, 85, 170]],
    np.float32,
)


def render(rng: np.random.Generator, terrain: np.ndarray) -> np.ndarray:
    """RGB images (n, 8k, 8k, 3) uint8 of terrain classes (n, k, k)."""
    n, k, _ = terrain.shape
    f32 = np.float32

    def cells(values: np.ndarray) -> np.ndarray:  # per-cell values, upsampled
        return np.repeat(np.repeat(values, CELL, 1), CELL, 2)

    def per_cell(low: float, high: float) -> np.ndarray:
        return cells((low + (high - low) * rng.random((n, k, k), f32)).astype(f32))

    up = cells(terrain)  # (n, 8k, 8k)
    within = (np.arange(CELL * k) % CELL).astype(f32)
    uu, vv = within[None, :, None], within[None, None, :]  # row, column in the cell
    # Colour and lighting (per cell and per map) at the cell level, then upsampled.
    shade = rng.uniform(0.9, 1.1, (n, k, k)) * rng.uniform(0.85, 1.15, (n, 1, 1))
    img = cells(_BASE[terrain] * shade[..., None].astype(f32))  # (n, 8k, 8k, 3)
    # Grey-level additions, starting from pixel noise (uniform, standard deviation 10).
    light = (rng.random(up.shape, f32) - f32(0.5)) * f32(10 * np.sqrt(12))
    # Road: two darker wheel ruts, along rows or columns at random.
    rut = np.where(per_cell(0, 1) < 0.5, (uu == 2) | (uu == 5), (vv == 2) | (vv == 5))
    light[(up == 0) & rut] -= 35
    # Grass: sparse yellow flowers.
    img[(up == 1) & (rng.random(up.shape, f32) < 0.06)] += np.array([70, 40, -20], f32)
    # Forest: a round tree crown, darker, with a lighter top-left rim.
    cu, cv = per_cell(2.5, 4.5), per_cell(2.5, 4.5)
    r2 = np.square(uu - cu)
    r2 += np.square(vv - cv)
    crown = (up == 2) & (r2 < 7.5)
    img[crown] -= np.array([20, 45, 22], f32)
    img[crown & (r2 > 3.5) & (uu + vv < cu + cv)] += np.array([25, 50, 20], f32)
    # Mountains: a lighter peak with a snowy top.
    inside = (up == 3) & (uu >= 1 + 1.4 * np.abs(vv - per_cell(2.5, 4.5)))
    light[inside] += 40
    img[inside & (uu < 3.5)] = np.array([195, 195, 200], f32)
    # Water: diagonal waves.
    water = up == 4
    phase = per_cell(0, 2 * np.pi)[water]
    wave = np.broadcast_to(vv + 2 * uu, up.shape)[water] * f32(2 * np.pi / 6)
    light[water] += 25 * np.sin(wave + phase)
    img += light[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def _solve(weights: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Shortest-path masks, in fixed-size chunks (padded) so one shape is compiled."""
    out = np.empty_like(weights)
    for start in range(0, len(weights), chunk):
        part = weights[start : start + chunk]
        padded = np.concatenate(
            [part, np.ones((chunk - len(part), *part.shape[1:]), part.dtype)]
        )
        out[start : start + len(part)] = np.asarray(
            pl.solvers.grid_shortest_path(jnp.asarray(padded))
        )[: len(part)]
    return out


def generate_warcraft_maps(
    num_maps: int, size: int = 12, seed: int = 0, stream: int = 0, chunk: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`num_maps` generated k × k maps (k = `size`): images, vertex weights, paths.

    Deterministic in its arguments. Maps are made `chunk` at a time, chunk j from
    `np.random.default_rng((seed, stream, j))`: different streams (the training and
    the test set) are independent, and the full chunks of a smaller set are the first
    maps of a larger one.

    **Returns:** `maps` (N, 8k, 8k, 3) uint8, `vertex_weights` (N, k, k) float32,
    `shortest_paths` (N, k, k) float32 (0/1).

    ```python
    from perturbed_layers.experiments import generate_warcraft_maps

    maps, weights, paths = generate_warcraft_maps(4, size=12, seed=0)
    maps.shape, weights.shape, paths.shape  # (4, 96, 96, 3), (4, 12, 12), (4, 12, 12)
    ```
    """
    maps = np.empty((num_maps, CELL * size, CELL * size, 3), np.uint8)
    terrain = np.empty((num_maps, size, size), np.int8)
    for index, start in enumerate(range(0, num_maps, chunk)):
        rng = np.random.default_rng((seed, stream, index))
        count = min(chunk, num_maps - start)
        terrain[start : start + count] = generate_terrain(rng, count, size)
        maps[start : start + count] = render(rng, terrain[start : start + count])
    weights = TERRAIN_COSTS[terrain]
    return maps, weights, _solve(weights)


def _check_split(
    folder: pathlib.Path, split: str, maps: np.ndarray, weights: np.ndarray,
    paths: np.ndarray,
) -> None:  # fmt: skip
    """Refuse data that would train to NaN or crash later: the file and the first
    offending map are named."""

    def fail(part: str, index: np.ndarray | None, problem: str) -> ValueError:
        at = f" (map {int(index[0])} first)" if index is not None else ""
        return ValueError(f"{folder / f'{split}_{part}.npy'}: {problem}{at}")

    if maps.dtype != np.uint8:
        raise fail("maps", None, f"dtype {maps.dtype}; RGB images are uint8 (0-255)")
    for part, array in (("vertex_weights", weights), ("shortest_paths", paths)):
        if not (
            np.issubdtype(array.dtype, np.floating)
            or np.issubdtype(array.dtype, np.integer)
        ):
            raise fail(part, None, f"dtype {array.dtype}; expected numbers")
    per_map = weights.reshape(len(weights), -1)
    bad = np.flatnonzero(~np.all(np.isfinite(per_map), axis=1))
    if bad.size:
        raise fail("vertex_weights", bad, "NaN or infinite vertex weights")
    bad = np.flatnonzero(np.any(per_map <= 0, axis=1))
    if bad.size:
        raise fail(
            "vertex_weights", bad, "zero or negative vertex weights (costs are > 0)"
        )
    flat = paths.reshape(len(paths), -1)
    bad = np.flatnonzero(np.any((flat != 0) & (flat != 1), axis=1))
    if bad.size:
        raise fail("shortest_paths", bad, "not a 0/1 mask")
    bad = np.flatnonzero((paths[:, 0, 0] != 1) | (paths[:, -1, -1] != 1))
    if bad.size:
        raise fail(
            "shortest_paths", bad,
            "the path does not contain both corners (top-left and bottom-right)",
        )  # fmt: skip


def load_warcraft_split(
    folder: pathlib.Path, split: str, size: int, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `limit` maps of `{split}_maps.npy`, `{split}_vertex_weights.npy` and
    `{split}_shortest_paths.npy` in `folder`, checked against the k × k layout and
    the data's rules: uint8 maps, finite positive vertex weights, 0/1 paths that
    contain both corners. Files are read as arrays only (no pickled objects).

    **Raises:** `FileNotFoundError` or `ValueError` naming the file and the problem.
    """
    arrays = []
    for part in ("maps", "vertex_weights", "shortest_paths"):
        path = folder / f"{split}_{part}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (data.path: {folder})")
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    maps, weights, paths = arrays
    expected = ((CELL * size, CELL * size, 3), (size, size), (size, size))
    for part, array, shape in zip(
        ("maps", "vertex_weights", "shortest_paths"), arrays, expected, strict=True
    ):
        if array.shape[1:] != shape or len(array) != len(maps):
            raise ValueError(
                f"{folder / f'{split}_{part}.npy'} has shape {array.shape}; expected "
                f"({len(maps)}, {', '.join(map(str, shape))}) for size {size}"
            )
    if limit > len(maps):
        raise ValueError(f"{split}: asked for {limit} maps, {folder} has {len(maps)}")
    maps, weights, paths = maps[:limit], weights[:limit], paths[:limit]
    _check_split(folder, split, maps, weights, paths)
    return (
        np.asarray(maps, np.uint8),
        np.asarray(weights, np.float32),
        np.asarray(paths, np.float32),
    )
