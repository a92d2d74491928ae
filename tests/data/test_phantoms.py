import numpy as np

from psr.data.demo import demo_store_path, ensure_demo_store
from psr.data.phantoms import PhantomSpec, render_phantom
from psr.io.omezarr import discover_images


def test_phantom_is_deterministic_per_seed_and_index() -> None:
    spec = PhantomSpec(size=64)
    a = render_phantom(3, 1, spec)
    assert a.dtype == np.uint16 and a.shape == (64, 64)
    assert np.array_equal(a, render_phantom(3, 1, spec))
    assert not np.array_equal(a, render_phantom(4, 1, spec))
    assert not np.array_equal(a, render_phantom(3, 2, spec))


def test_phantom_has_structure_above_background() -> None:
    image = render_phantom(0, 0, PhantomSpec(size=128)).astype(float)
    background = np.percentile(image, 10)
    assert image.max() > 3 * background  # bright filaments and puncta over the background
    assert image.min() >= PhantomSpec().offset - 1


def test_phantom_is_band_limited_by_the_psf() -> None:
    image = render_phantom(0, 0, PhantomSpec(size=256)).astype(float)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    yy, xx = np.indices(spectrum.shape) - 128
    radius = np.hypot(yy, xx)
    low = spectrum[radius < 20].mean()
    high = spectrum[radius > 110].mean()
    assert high < 1e-3 * low


def test_demo_store_is_generated_once_and_reused(tmp_path) -> None:  # noqa: ANN001
    path = ensure_demo_store(tmp_path, n_images=2, image_size=32, seed=5)
    assert path == demo_store_path(tmp_path, 2, 32, 5)
    stamp = path.stat().st_mtime_ns
    assert ensure_demo_store(tmp_path, n_images=2, image_size=32, seed=5).stat().st_mtime_ns == stamp
    refs = discover_images(path)
    assert [r.axes for r in refs] == ["cyx", "cyx"]
    assert refs[0].shape == (1, 32, 32) and refs[0].dtype == "uint16"
    assert refs[0].pixel_size["x"] > 0
    assert np.array_equal(refs[1].open()[0], render_phantom(5, 1, PhantomSpec(size=32)))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_demo_store_opens_with_the_ome_zarr_reader(tmp_path) -> None:  # noqa: ANN001
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = ensure_demo_store(tmp_path, n_images=1, image_size=32, seed=0)
    nodes = list(Reader(parse_url(str(path / "img_000")))())
    image = nodes[0]
    assert [ax["name"] for ax in image.metadata["axes"]] == ["c", "y", "x"]
    level0 = np.asarray(image.data[0])
    assert level0.shape == (1, 32, 32)
    assert np.array_equal(level0[0], render_phantom(0, 0, PhantomSpec(size=32)))
