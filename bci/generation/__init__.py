"""Image generation from decoded brain activity.

Two paths (see ``docs/generation.md``):

- **pixel level**: a conditional saliency GAN, ``G(f_θ(x))`` → coarse RGB image
  (:class:`SaliencyGenerator`, :class:`PixelImageStep`, :func:`save_generator`,
  :func:`load_generator`); torch only, milliseconds per image.
- **latent diffusion** (optional extra ``diffusion``): img2img of the pixel-level image
  conditioned on the sample-level embedding (:class:`LatentImg2Img`,
  :class:`EmbeddingToTokens`); diffusers is imported only when it is used, and
  :func:`diffusion_status` says in one line why the stage is off.

>>> from bci.generation import GeneratorConfig, SaliencyGenerator, PixelImageStep
>>> step = PixelImageStep(SaliencyGenerator(GeneratorConfig(feature_dim=128, image_size=64)))
"""

from __future__ import annotations

from bci.generation.diffusion import (
    DiffusionUnavailable,
    EmbeddingToTokens,
    LatentImg2Img,
    ProjectorConfig,
    diffusion_status,
    load_projector,
    save_projector,
)
from bci.generation.saliency import (
    DiscriminatorConfig,
    GanCheckpoint,
    GeneratorConfig,
    PixelImageStep,
    SaliencyDiscriminator,
    SaliencyGenerator,
    images_to_uint8,
    load_discriminator,
    load_generator,
    load_pixel_step,
    read_gan_checkpoint,
    save_generator,
)

__all__ = [
    "DiffusionUnavailable",
    "DiscriminatorConfig",
    "EmbeddingToTokens",
    "GanCheckpoint",
    "GeneratorConfig",
    "LatentImg2Img",
    "PixelImageStep",
    "ProjectorConfig",
    "SaliencyDiscriminator",
    "SaliencyGenerator",
    "diffusion_status",
    "images_to_uint8",
    "load_discriminator",
    "load_generator",
    "load_pixel_step",
    "load_projector",
    "read_gan_checkpoint",
    "save_generator",
    "save_projector",
]
