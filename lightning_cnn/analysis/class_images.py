"""What the network sees in each class: the input that maximises a class's logit, by regularised gradient ascent.

From a neutral image (the data's mean, with a little noise), each step shifts the images by a few random pixels
(jitter), climbs the class logit minus an L2 penalty, keeps the pixels in the data's range and now
and then blurs them: without these, the ascent finds high-frequency noise that no one can read.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur


def class_images(
    network: nn.Module,
    num_classes: int,
    input_shape: tuple[int, int, int],
    low: Tensor | float,
    high: Tensor | float,
    steps: int = 128,
    learning_rate: float = 0.1,
    l2_weight: float = 0.003,
    jitter: int = 2,
    blur_every: int = 4,
    noise: float = 0.3,
    deadline: float | None = None,
    seed: int = 0,
) -> tuple[Tensor, int]:
    """One image per class, in the network's input space, and the number of steps taken.

    Args:
        network: maps ``(N, *input_shape)`` images to ``(N, num_classes)`` logits.
        low, high: the inputs of a black and a white pixel (per channel, broadcastable over ``(N, C, H, W)``).
        steps: ascent steps at most.
        noise: spread of the start around the data's mean; a uniform image gives every ReLU the same sign,
            often all off, and so no gradient.
        deadline: a ``time.perf_counter()`` value after which no step starts (the images so far are returned).
    """
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(num_classes, *input_shape, generator=generator) * noise
    images = start.to(device).requires_grad_(True)
    low = torch.as_tensor(low, dtype=images.dtype, device=device)
    high = torch.as_tensor(high, dtype=images.dtype, device=device)
    optimizer = torch.optim.Adam([images], lr=learning_rate)
    classes = torch.arange(num_classes, device=device)
    was_training = network.training
    network.eval()
    taken = 0
    try:
        # Evaluation hooks run without gradients (and may be inside inference mode): both are undone here.
        with torch.inference_mode(False), torch.enable_grad():
            for step in range(steps):
                if deadline is not None and time.perf_counter() > deadline:
                    break
                shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                logits = network(torch.roll(images, shifts=shift, dims=(-2, -1)))
                objective = logits[classes, classes] - l2_weight * images.pow(2).flatten(1).sum(dim=1)
                # Gradients for the images only: the network's own .grad stay untouched.
                (gradient,) = torch.autograd.grad(-objective.sum(), images)
                images.grad = gradient
                optimizer.step()
                with torch.no_grad():
                    images.copy_(torch.maximum(torch.minimum(images, high), low))
                    if blur_every and (step + 1) % blur_every == 0:
                        images.copy_(gaussian_blur(images, kernel_size=3, sigma=0.5))
                taken += 1
    finally:
        network.train(was_training)
    return images.detach(), taken


def integrated_gradients(
    network: nn.Module, images: Tensor, targets: Tensor, baseline: Tensor | float, steps: int = 16
) -> Tensor:
    """Per-pixel evidence for ``targets``: Integrated Gradients from ``baseline`` (a black image), ``(N, H, W)``.

    The attribution ``(x − b)·mean_α ∇f(b + α(x − b))`` sums, over a pixel's channels, what that
    pixel added to the target logit; only the positive part (evidence for the target) is returned.
    """
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images).clone()
            alphas = torch.linspace(1 / steps, 1, steps, device=images.device).view(-1, 1, 1, 1, 1)
            # Every step of every image in one batch: (steps, N, C, H, W) flattened to (steps·N, C, H, W).
            path = (baseline + alphas * (images - baseline)).flatten(0, 1).requires_grad_(True)
            logits = network(path)
            chosen = logits[torch.arange(len(path), device=images.device), targets.repeat(steps)]
            (gradients,) = torch.autograd.grad(chosen.sum(), path)
            mean_gradient = gradients.view(steps, *images.shape).mean(dim=0)
            attributions = ((images - baseline) * mean_gradient).sum(dim=1)
    finally:
        network.train(was_training)
    return attributions.clamp_min(0).detach()
