"""Augmentation on the device, vectorised over a ``uint8 (N, H, W, C)`` batch.

Translation: reflection padding by ``crop_pad`` pixels and a random crop back to size, one offset
per image. Flip: either a fresh coin per image and step, or alternating flip (airbench): each image
gets one coin for the whole run and is mirrored on the epochs where ``coin XOR (epoch is odd)``,
so over any two epochs in a row the network sees it once each way.
"""

from __future__ import annotations

import torch

from engine.training.recipes import Recipe


def alternating_flips(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images are mirrored in ``epoch`` (0-based), from each image's one ``base`` coin."""
    return base if epoch % 2 == 0 else ~base


def flip_coins(n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The per-image coins of alternating flip: a function of the run's seed only, so a resumed
    run draws the same ones without storing them."""
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    return (torch.rand(n, generator=gen) < 0.5).to(device)


def augment(batch: torch.Tensor, recipe: Recipe, generator: torch.Generator,
            flips: torch.Tensor | None = None) -> torch.Tensor:
    """Random translation and flip of a ``uint8 (N, H, W, C)`` batch, one draw per image.

    ``flips`` (bool, one per image) decides the mirroring; without it each image tosses a coin.
    """
    n, h, w, _ = batch.shape
    device = batch.device
    if recipe.crop_pad > 0:
        p = recipe.crop_pad
        # reflection pad works on float NCHW; uint8 NHWC is padded by indexing instead (same result)
        rows = torch.arange(-p, h + p, device=device).abs()
        rows = torch.where(rows >= h, 2 * (h - 1) - rows, rows)
        cols = torch.arange(-p, w + p, device=device).abs()
        cols = torch.where(cols >= w, 2 * (w - 1) - cols, cols)
        dy = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        r = rows[dy[:, None] + torch.arange(h, device=device)]  # (N, H) source rows
        c = cols[dx[:, None] + torch.arange(w, device=device)]  # (N, W) source columns
        if recipe.flip:
            flip = flips if flips is not None else torch.rand(n, device=device, generator=generator) < 0.5
            c = torch.where(flip[:, None], c.flip(1), c)
        idx = torch.arange(n, device=device)
        return batch[idx[:, None, None], r[:, :, None], c[:, None, :]]
    if recipe.flip:
        flip = flips if flips is not None else torch.rand(n, device=device, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], batch.flip(2), batch)
    return batch
