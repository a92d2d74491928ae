"""Training objectives: reconstruction losses ``forward(pred, target) -> scalar`` and GAN objectives.

Reconstruction losses take ``pred`` and ``target`` of equal shape ``(B, C, Y, X)``, or ``(B, C, Z, Y, X)``
where noted, with any channel count, and return a 0-dim tensor (the batch mean). They compute in at least
float32, so the ``pred.float()`` the restoration module passes is never downcast by autocast.

- :class:`CharbonnierLoss`: a smooth L1 (2D and 3D).
- :class:`SSIML1Loss`: the MS-SSIM + L1 mix of Zhao et al. (2D and 3D).
- :class:`FFTLoss`: L1 on the Fourier coefficients over the last two axes, optionally plus pixel L1
  (2D and 3D).
- :class:`PerceptualLoss`: VGG19 feature distances (Johnson et al. 2016), 2D and 3D by folding channels
  and Z into the batch; ImageNet weights are read from a local file only, never downloaded.

GAN objectives (:class:`GANLoss`: :class:`VanillaGANLoss`, :class:`LSGANLoss`, :class:`HingeGANLoss`)
turn discriminator logits of any shape (per image, per patch or per pixel) into the generator's and the
discriminator's losses.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

# MS-SSIM is a metric first; it lives in psr.metrics and is re-exported here for the loss and its users.
from psr.metrics.image import MS_SSIM_WEIGHTS as MS_SSIM_WEIGHTS  # re-exported
from psr.metrics.image import ms_ssim


def _check_pair(name: str, pred: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name} needs pred and target of equal shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.dim() not in dims:
        axes = " or ".join({4: "(B, C, Y, X)", 5: "(B, C, Z, Y, X)"}[d] for d in dims)
        raise ValueError(f"{name} expects {axes}, got shape {tuple(pred.shape)}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


class CharbonnierLoss(nn.Module):
    """Charbonnier penalty ``mean(sqrt((pred − target)² + eps²))``, a differentiable L1.

    From Charbonnier et al. (ICIP 1994), used for super-resolution by LapSRN (Lai et al., CVPR 2017). It
    equals ``eps`` for identical inputs (the usual form, without subtracting ``eps``) and approaches L1
    for errors much larger than ``eps``; near zero it is quadratic, so its gradient vanishes smoothly
    instead of flipping sign. ``(B, C, Y, X)`` and ``(B, C, Z, Y, X)``.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"CharbonnierLoss eps must be > 0, got {eps}")
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("CharbonnierLoss", pred, target, (4, 5))
        diff = _at_least_float32(pred) - _at_least_float32(target)
        return torch.sqrt(diff * diff + self.eps**2).mean()


class SSIML1Loss(nn.Module):
    """``alpha · (1 − MS-SSIM) + (1 − alpha) · L1`` (Zhao, Gallo, Frosio & Kautz, "Loss Functions for
    Image Restoration with Neural Networks", IEEE TCI 2017; their MS-SSIM+ℓ1 with ``alpha = 0.84``).

    MS-SSIM is :func:`ms_ssim`: as many scales as the patch allows (3 for 64×64, 2 for 32×32, single-scale
    SSIM below 22 pixels). The L1 term is the plain mean absolute error; Zhao et al. weight it with the
    Gaussian of the coarsest MS-SSIM scale, a refinement left out here. ``data_range`` defaults to 1, the
    span of percentile-normalised data: a per-sample range (``None``) shrinks the stabilising constants to
    nothing on flat background patches and makes their SSIM noise-dominated. ``(B, C, Y, X)`` and
    ``(B, C, Z, Y, X)``; every spatial axis needs at least 11 pixels.
    """

    def __init__(self, alpha: float = 0.84, data_range: float | None = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"SSIML1Loss alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.data_range = data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("SSIML1Loss", pred, target, (4, 5))
        pred, target = _at_least_float32(pred), _at_least_float32(target)
        structural = 1.0 - ms_ssim(pred, target, data_range=self.data_range).mean()
        return self.alpha * structural + (1.0 - self.alpha) * F.l1_loss(pred, target)


class FFTLoss(nn.Module):
    """Frequency-domain L1: ``weight · mean(|Re ΔF| + |Im ΔF|) + pixel_weight · mean(|Δx|)``.

    ``ΔF`` is the difference of the orthonormal real FFTs (``torch.fft.rfft2(..., norm="ortho")``) of
    prediction and target over the last two axes (Y, X), so 3D batches are compared plane by plane.
    Complex values, not magnitudes, are compared: a magnitude spectrum ignores phase, so a shifted or
    mirrored prediction would score zero. The L1 on real and imaginary parts follows the frequency loss
    of MIMO-UNet (Cho et al., ICCV 2021); see also Fuoli et al., "Fourier Space Losses for Efficient
    Perceptual Image Super-Resolution" (ICCV 2021). With ``norm="ortho"`` a broadband (noise-like) error
    costs about as much as in pixel L1 at any patch size, while an error concentrated on a few pixels (a
    lost spot or a thin line, spread over all frequencies) costs far more than its pixel L1.
    ``pixel_weight`` adds the ordinary pixel L1 (the config uses both at weight 1).
    """

    def __init__(self, weight: float = 1.0, pixel_weight: float = 0.0) -> None:
        super().__init__()
        if weight < 0 or pixel_weight < 0 or weight + pixel_weight == 0:
            raise ValueError(
                f"FFTLoss weights must be >= 0 and not both 0, got weight={weight}, pixel_weight={pixel_weight}"
            )
        self.weight = weight
        self.pixel_weight = pixel_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("FFTLoss", pred, target, (4, 5))
        # Half-precision FFTs need power-of-two sizes on CUDA; float32 is exact enough and size-agnostic.
        pred, target = _at_least_float32(pred), _at_least_float32(target)
        diff = torch.fft.rfft2(pred - target, norm="ortho")  # linear: FFT(p) − FFT(t) in one transform
        loss = self.weight * torch.view_as_real(diff).abs().sum(-1).mean()
        if self.pixel_weight:
            loss = loss + self.pixel_weight * F.l1_loss(pred, target)
        return loss


# VGG19 ``features`` layer names in torchvision's order (index i of ``vgg19().features`` is _VGG19[i]).
_VGG19: tuple[str, ...] = tuple(
    name
    for block, n_convs in enumerate((2, 2, 4, 4, 4), start=1)
    for name in (
        *(f"{kind}{block}_{i}" for i in range(1, n_convs + 1) for kind in ("conv", "relu")),
        f"pool{block}",
    )
)
VGG19_FILE = "vgg19-dcbb9e9d.pth"
# Real-ESRGAN's perceptual layers: features before activation (ESRGAN), shallow ones down-weighted.
REAL_ESRGAN_LAYERS: Mapping[str, float] = MappingProxyType(
    {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DOWNLOAD_HINT = (
    "nothing is downloaded: on a machine with network run "
    "`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` and copy "
    f"$TORCH_HOME/hub/checkpoints/{VGG19_FILE} (default ~/.cache/torch/hub/checkpoints/) from there"
)


class PerceptualLoss(nn.Module):
    """Feature-reconstruction loss on a frozen ImageNet VGG19 (Johnson, Alahi & Fei-Fei, "Perceptual
    Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016).

    ``weight · Σ_l layers[l] · mean|φ_l(pred) − φ_l(target)|`` over the named layers of
    ``torchvision.models.vgg19().features`` (``conv1_1`` … ``relu5_4``, ``pool1`` … ``pool5``). The
    default is Real-ESRGAN's set (Wang et al. 2021): features before activation, as ESRGAN (Wang et al.
    2018) recommends, compared with L1. ``layers`` may also be a list of names, each weighted 1.

    Microscopy channels are not RGB: every channel (and, for ``(B, C, Z, Y, X)``, every Z plane) is
    folded into the batch as a grey image, repeated to 3 channels and normalised with the ImageNet
    mean and std. Inputs are expected in about [0, 1], the span of percentile-normalised data.

    The ImageNet weights come only from a local file, ``weights_path`` or else the torch hub cache
    (``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``), and are loaded lazily on the first forward:
    building the loss works offline, and a missing file raises ``FileNotFoundError`` saying where to put
    it when the loss is first used (call :meth:`resolve_weights` to check at start-up instead).
    ``random_weights=True`` uses a fixed random initialisation instead: for tests only, as random features
    carry no perceptual meaning.

    The frozen VGG is deliberately not a registered submodule: it stays out of ``state_dict`` (checkpoints
    carry no 80 MB of ImageNet weights, and loading one never depends on whether the loss has run yet)
    and out of ``parameters()``; it follows the input's device on each call.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        layers: Mapping[str, float] | Sequence[str] = REAL_ESRGAN_LAYERS,
        weights_path: str | os.PathLike[str] | None = None,
        weight: float = 1.0,
        random_weights: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        chosen = dict(layers) if isinstance(layers, Mapping) else dict.fromkeys(layers, 1.0)
        unknown = [name for name in chosen if name not in _VGG19]
        if unknown or not chosen:
            raise ValueError(
                f"PerceptualLoss layers {unknown or '(none)'} are not VGG19 layers; choose from {', '.join(_VGG19)}"
            )
        self.layers = {str(k): float(v) for k, v in chosen.items()}
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.weight = weight
        self.random_weights = random_weights
        self._depth = 1 + max(_VGG19.index(name) for name in self.layers)
        self._vgg: list[nn.Sequential] = []  # built on first use; a list so nn.Module does not register it
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def resolve_weights(self) -> Path | None:
        """The VGG19 weights file the loss will read (``None`` with ``random_weights``).

        Raises ``FileNotFoundError`` with instructions when the file is absent.
        """
        if self.random_weights:
            return None
        if self.weights_path is not None:
            if not self.weights_path.is_file():
                raise FileNotFoundError(
                    f"PerceptualLoss weights_path={self.weights_path} does not exist; {_DOWNLOAD_HINT} "
                    "to that path"
                )
            return self.weights_path
        cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
        if not cached.is_file():
            raise FileNotFoundError(
                f"PerceptualLoss needs the ImageNet VGG19 weights and found no weights_path and no {cached}; "
                f"{_DOWNLOAD_HINT} to {cached}, or set weights_path to the file"
            )
        return cached

    def _build(self) -> nn.Sequential:
        import torchvision

        path = self.resolve_weights()
        with torch.device("meta"):  # skips initialising the 100M-parameter classifier we never use
            features = torchvision.models.vgg19(weights=None).features[: self._depth]
        features = features.to_empty(device="cpu")
        if path is None:
            # torchvision's VGG initialisation, from a fixed seed so the loss is deterministic.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                for module in features.modules():
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                        if module.bias is not None:
                            nn.init.zeros_(module.bias)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            prefix = "features."
            own = features.state_dict()
            picked = {
                k[len(prefix) :]: v
                for k, v in state.items()
                if k.startswith(prefix) and k[len(prefix) :] in own
            }
            if picked.keys() != own.keys():
                raise ValueError(
                    f"PerceptualLoss weights file {path} is not a torchvision VGG19 state dict "
                    f"(missing {sorted(own.keys() - picked.keys())[:3]})"
                )
            features.load_state_dict(picked)
        for module in features.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # an in-place ReLU would overwrite the conv features we keep
        features.requires_grad_(False)
        return features.eval()

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self._vgg:
            self._vgg.append(self._build())
        vgg = self._vgg[0]
        if next(vgg.parameters()).device != x.device:
            vgg.to(x.device)
        x = x.reshape(-1, 1, *x.shape[-2:]).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for name, layer in zip(_VGG19, vgg, strict=False):
            x = layer(x)
            if name in self.layers:
                out[name] = x
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("PerceptualLoss", pred, target, (4, 5))
        pred_features = self._features(_at_least_float32(pred))
        with torch.no_grad():
            target_features = self._features(_at_least_float32(target))
        loss = sum(
            (w * F.l1_loss(pred_features[name], target_features[name]) for name, w in self.layers.items()),
            torch.zeros((), device=pred.device),
        )
        return self.weight * loss


class GANLoss(nn.Module, abc.ABC):
    """An adversarial objective on discriminator logits of any shape (averaged over all elements).

    ``discriminator_loss(real_logits, fake_logits)`` is what the discriminator minimises (the sum of its
    real and fake terms); ``generator_loss(fake_logits)`` is what the generator minimises. Pass the
    discriminator's logits on generated images detached for the former and attached for the latter.
    """

    @abc.abstractmethod
    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """The generator's loss from the logits of generated images."""

    @abc.abstractmethod
    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss from the logits of real and of generated images."""

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`discriminator_loss` (``nn.Module`` needs a ``forward``)."""
        return self.discriminator_loss(real_logits, fake_logits)


class VanillaGANLoss(GANLoss):
    """The original GAN objective (Goodfellow et al., NeurIPS 2014) as binary cross-entropy on logits.

    D: ``BCE(real, 1) + BCE(fake, 0) = softplus(−real) + softplus(fake)``; G: the non-saturating
    ``BCE(fake, 1) = softplus(−fake)`` (pix2pix, SRGAN, ESRGAN).
    """

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_logits.float()).mean()

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


class LSGANLoss(GANLoss):
    """Least-squares GAN (Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017), with
    targets 1 for real and 0 for fake.

    D: ``mean((real − 1)²) + mean(fake²)``; G: ``mean((fake − 1)²)``. Mao et al.'s factors ½ are dropped
    (a constant scale, absorbed by the adversarial weight), matching BasicSR and pix2pix's ``lsgan``.
    """

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return (fake_logits.float() - 1).pow(2).mean()

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return (real_logits.float() - 1).pow(2).mean() + fake_logits.float().pow(2).mean()


class HingeGANLoss(GANLoss):
    """Hinge GAN (Lim & Ye, "Geometric GAN", 2017; Miyato et al., "Spectral Normalization for Generative
    Adversarial Networks", ICLR 2018).

    D: ``mean(relu(1 − real)) + mean(relu(1 + fake))``; G: ``−mean(fake)``.
    """

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()
