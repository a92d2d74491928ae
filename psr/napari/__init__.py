"""psr's napari plugin (``pip install -e '.[napari]'`` in a checkout; manifest ``napari.yaml``, entry point
``napari.manifest``): a reader for psr's OME-Zarr stores and predictions (``reader``) and the "Restore
with psr" widget (``widget``), whose work is the Qt-free ``restore`` module. Importing this package
imports neither napari nor Qt."""
