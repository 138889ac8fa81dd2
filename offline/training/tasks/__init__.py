"""One file per trainer: sample-level, pixel-level, saliency GAN, tiny CLIP, fMRI."""
