"""``data=demo``: the embedded default dataset, generated once into an OME-Zarr store in a cache folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from psr.data.phantoms import PhantomSpec, render_phantom
from psr.data.zarr import ZarrDataModule
from psr.io.omezarr import write_ome_zarr_collection

DEMO_VERSION = 1
DEMO_PIXEL_SIZE_UM = 0.065  # a 100x / 6.5 µm camera pixel: nominal, for viewers


def demo_store_path(cache_dir: str | Path, n_images: int, image_size: int, seed: int) -> Path:
    """Where the demo store for these settings lives; the name hashes everything that shapes its pixels."""
    spec = PhantomSpec(size=image_size)
    key = json.dumps({"v": DEMO_VERSION, "n": n_images, "seed": seed, "spec": spec.as_dict()}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(cache_dir).expanduser() / f"demo-{digest}.ome.zarr"


def ensure_demo_store(
    cache_dir: str | Path, n_images: int = 24, image_size: int = 512, seed: int = 0
) -> Path:
    """Generate the phantom store if it is not cached yet; return its path."""
    path = demo_store_path(cache_dir, n_images, image_size, seed)
    if path.exists():
        return path
    if n_images < 1 or image_size < 16:
        raise ValueError(
            f"the demo needs n_images >= 1 and image_size >= 16, got {n_images} and {image_size}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = PhantomSpec(size=image_size)
    images = [render_phantom(seed, i, spec)[None] for i in range(n_images)]
    attrs: dict[str, Any] = {"psr": {"generator": "psr.data.phantoms", "seed": seed, "spec": spec.as_dict()}}
    size = {"y": DEMO_PIXEL_SIZE_UM, "x": DEMO_PIXEL_SIZE_UM}
    return write_ome_zarr_collection(
        path, images, "cyx", pixel_size=size, chunks=(1, 256, 256), attributes=attrs
    )


class DemoDataModule(ZarrDataModule):
    """A ``ZarrDataModule`` over deterministic fluorescence-like phantoms (see ``psr.data.phantoms``).

    Takes every ``ZarrDataModule`` argument except the images' location: ``path`` and ``manifest`` must
    stay ``None`` (``conf/data/demo.yaml`` inherits ``conf/data/zarr.yaml``, where both are null).
    """

    def __init__(
        self,
        cache_dir: str,
        n_images: int = 24,
        image_size: int = 512,
        phantom_seed: int = 0,
        path: str | None = None,
        manifest: object = None,
        **kwargs: Any,
    ) -> None:
        if path is not None or manifest is not None:
            key = "data.path" if path is not None else "data.manifest"
            raise ValueError(
                f"{key} is set but data=demo generates its own phantom images; expected {key}=null, or"
                " data=zarr to train on your own images"
            )
        self.demo_cache_dir = cache_dir
        self.n_images = n_images
        self.image_size = image_size
        self.phantom_seed = phantom_seed
        store = demo_store_path(cache_dir, n_images, image_size, phantom_seed)
        super().__init__(path=str(store), cache_dir=cache_dir, **kwargs)

    def prepare_data(self) -> None:
        ensure_demo_store(self.demo_cache_dir, self.n_images, self.image_size, self.phantom_seed)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers callers that skip prepare_data
        super().setup(stage)
