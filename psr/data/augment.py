"""Per-sample geometric augmentation of training patches with albumentations, in the loader workers.

``data.augment`` is ``true`` (psr's built-in random flips on every spatial axis and 90° rotations in Y/X,
the default), ``false`` (none), or a list of albumentations transforms given as ``_target_`` entries,
which Hydra instantiates, for example PSSR's dihedral group, ±10° rotation and zoom::

    augment:
      - {_target_: albumentations.D4, p: 1.0}
      - {_target_: albumentations.Affine, rotate: [-10, 10], scale: [1.0, 1.1], border_mode: 4, p: 0.75}

or an elastic deformation for EM (``albumentations.ElasticTransform``). ``Augmenter`` applies them to a
patch ``(C, Y, X)`` as an image ``(Y, X, C)``, or to a 3D patch ``(C, Z, Y, X)`` as a volume
``(Z, Y, X, C)`` (2D transforms then act on every Z plane alike; ``albumentations.CubicSymmetry`` acts in
3D on cubic patches). Any channel count and uint8, uint16 or float32 values work; float32 values outside
[0, 1] (normalised intensities) are kept, not clipped. Each call is seeded from the patch's own random
stream (a function of the seed, the epoch and the patch's index alone), so a seeded run draws the same
augmentations with any number of loader workers, as for the built-in ones. Transforms must keep the patch's shape (a crop or a resize is
refused with one sentence): the patch size is checked against the scale before training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from psr.errors import ConfigError

# albumentations asks PyPI for a newer version at import (a 2 s timeout offline) unless this is set.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class AugmentError(ConfigError):
    """A ``data.augment`` entry that is not an albumentations transform, or one that changes the shape."""


def _describe(transforms: Sequence[Any]) -> str:
    return "[" + ", ".join(type(t).__name__ for t in transforms) + "]"


class Augmenter:
    """Apply albumentations ``transforms`` (in order, each with its own probability ``p``) to patches.

    Picklable, so DataLoader workers (fork or spawn) carry their own copy.
    """

    def __init__(self, transforms: Sequence[Any]) -> None:
        import albumentations as A

        items = list(transforms)
        for i, t in enumerate(items):
            if isinstance(t, Mapping):
                raise AugmentError(
                    f"data.augment[{i}] is a mapping {dict(t)!r}; expected a transform: give it a _target_"
                    " (e.g. albumentations.D4) and let Hydra instantiate it, or pass transform objects"
                )
            if not isinstance(t, A.BasicTransform | A.BaseCompose):
                raise AugmentError(
                    f"data.augment[{i}] is a {type(t).__name__}; expected an albumentations transform"
                    " (e.g. albumentations.D4, albumentations.Affine, albumentations.ElasticTransform)"
                )
        self.transforms = items
        self.compose = A.Compose(items, seed=0)

    def __repr__(self) -> str:
        return f"Augmenter({_describe(self.transforms)})"

    def __call__(self, block: np.ndarray, seed: int) -> np.ndarray:
        """``block (C, Y, X)`` or ``(C, Z, Y, X)``, transformed with randomness drawn from ``seed``; same
        shape and dtype."""
        if block.ndim not in (3, 4):
            raise AugmentError(
                f"augmentation expects (C, Y, X) or (C, Z, Y, X) patches, got {list(block.shape)}"
            )
        self.compose.set_random_seed(int(seed))
        channels_last = np.ascontiguousarray(np.moveaxis(block, 0, -1))
        if block.ndim == 3:
            out = self.compose(image=channels_last)["image"]
        else:
            out = self.compose(volume=channels_last)["volume"]
        out = np.asarray(out)
        if out.ndim == channels_last.ndim - 1:  # a single channel may come back without its axis
            out = out[..., None]
        if out.shape != channels_last.shape:
            raise AugmentError(
                f"data.augment {_describe(self.transforms)} turned a patch of shape"
                f" {list(channels_last.shape)} (channels last) into {list(out.shape)}; expected transforms"
                " that keep the patch's shape (no crops or resizes; CubicSymmetry needs cubic 3D patches)"
            )
        return np.ascontiguousarray(np.moveaxis(out, -1, 0).astype(block.dtype, copy=False))


def make_augment(augment: bool | Sequence[Any] | None) -> bool | Augmenter:
    """The patch augmentation for a ``data.augment`` value: ``True`` (psr's built-in flips and rotations),
    ``False`` (none; also for ``None`` and ``[]``) or an ``Augmenter`` for a list of transforms."""
    if augment is None or isinstance(augment, bool):
        return bool(augment)
    if isinstance(augment, str | bytes | Mapping) or not isinstance(augment, Sequence):
        raise AugmentError(
            f"data.augment is {augment!r}; expected true, false, or a list of transforms with a _target_"
        )
    return Augmenter(augment) if len(augment) else False
