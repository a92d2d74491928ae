"""Data: OME-Zarr stores, patch sampling, normalisation, datamodules and synthetic phantoms."""
