"""Remote stores: a zarr / OME-Zarr store served over HTTP reads like the same store on disk."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from psr.data.zarr import ZarrDataModule
from psr.io.omezarr import discover_images, write_ome_zarr_collection

# Consolidated metadata is what makes a remote collection listable; zarr warns it is not in the v3 spec yet.
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _NoListing(_Quiet):
    """Like most object stores behind HTTP: files are served, folders cannot be listed."""

    def list_directory(self, path: str):  # noqa: ANN201 - the base class returns a file or None
        self.send_error(404, "no listing")
        return None


def _serve(folder: Path, handler: type[http.server.SimpleHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A consolidated store of three images of different sizes, and the URL serving its folder."""
    rng = np.random.default_rng(0)
    images = [(rng.random((1, n, n)) * 1000).astype(np.uint16) for n in (48, 64, 80)]
    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", images, "cyx")
    zarr.consolidate_metadata(str(store))
    for url in _serve(tmp_path, _NoListing):
        yield store, f"{url}/set.ome.zarr"


def test_discover_images_lists_a_remote_store(served: tuple[Path, str]) -> None:
    store, url = served
    local, remote = discover_images(store), discover_images(url)
    assert (
        [r.image_path for r in remote] == [r.image_path for r in local] == ["img_000", "img_001", "img_002"]
    )
    assert [r.shape for r in remote] == [r.shape for r in local]
    assert all(r.remote and r.store == url for r in remote)
    np.testing.assert_array_equal(remote[2].open()[...], local[2].open()[...])
    # One image by its own URL, and a file:// URL, work too.
    (single,) = discover_images(f"{url}/img_001")
    assert single.shape == (1, 64, 64) and single.array_path == "s0"
    assert [r.shape for r in discover_images(f"file://{store}")] == [r.shape for r in local]


def test_datamodule_draws_the_same_patches_remotely(served: tuple[Path, str]) -> None:
    store, url = served
    kwargs = {
        "patch_size": 16,
        "batch_size": 4,
        "samples_per_epoch": 8,
        "val_samples": 8,
        "val_fraction": 0.34,
    }
    remote = ZarrDataModule(url, **kwargs)
    remote.setup()
    # A remote store is never written: its statistics stay in memory.
    assert "psr" not in dict(zarr.open_group(str(store / "img_000"), mode="r").attrs)
    local = ZarrDataModule(str(store), **kwargs)
    local.setup()
    assert [s.ref.image_path for s in remote.val_sources] == [s.ref.image_path for s in local.val_sources]
    assert torch.equal(torch.cat(list(remote.val_dataloader())), torch.cat(list(local.val_dataloader())))
    torch.manual_seed(1)
    a = next(iter(remote.train_dataloader()))
    torch.manual_seed(1)
    b = next(iter(local.train_dataloader()))
    assert torch.equal(a, b)


def test_remote_patches_in_a_worker_process(served: tuple[Path, str]) -> None:
    _, url = served
    dm = ZarrDataModule(url, patch_size=16, batch_size=2, samples_per_epoch=4, val_fraction=0, num_workers=1)
    dm.setup()
    batches = list(dm.train_dataloader())  # the worker reopens its own HTTP handles
    assert len(batches) == 2 and all(b.shape == (2, 1, 16, 16) and torch.isfinite(b).all() for b in batches)


def test_a_manifest_lists_images_where_http_cannot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((1, 32, 32)).astype(np.float32) for _ in range(2)]
    manifest = {
        "psr": {
            "manifest": {
                "version": 1,
                "images": {n: {"source": f"{n}.tif", "split": "train", "role": "clean"} for n in ("a", "b")},
                "pairs": [],
            }
        }
    }
    write_ome_zarr_collection(tmp_path / "m.ome.zarr", images, "cyx", names=["a", "b"], attributes=manifest)
    write_ome_zarr_collection(tmp_path / "plain.ome.zarr", images, "cyx")  # neither consolidated nor manifest
    for url in _serve(tmp_path, _NoListing):
        assert [r.image_path for r in discover_images(f"{url}/m.ome.zarr")] == ["a", "b"]
        with pytest.raises(ValueError, match=r"plain\.ome\.zarr.*consolidate"):
            discover_images(f"{url}/plain.ome.zarr")


def test_missing_urls_and_backends_fail_clearly(served: tuple[Path, str]) -> None:
    _, url = served
    with pytest.raises(FileNotFoundError, match=r"data path 'http://.*/nope\.zarr' does not exist"):
        discover_images(url.replace("set.ome.zarr", "nope.zarr"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZarrDataModule(url.replace("set.ome.zarr", "nope.zarr")).setup()
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"data path 'gs://bucket/x\.zarr' needs the gcsfs package"):
            discover_images("gs://bucket/x.zarr")
