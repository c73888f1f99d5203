"""Building blocks of the GAN objectives: least-squares GAN loss, PatchNCE, image history pool."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GANLoss(nn.Module):
    """LSGAN (Mao et al. 2017): mean squared distance of D's patch scores to 1 (real) or 0 (fake).

    Least squares instead of the log loss gives non-vanishing gradients to fakes that D already
    classifies well, which is why CycleGAN and CUT both use it.
    """

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = 1.0 if target_is_real else 0.0
        return ((prediction.float() - target) ** 2).mean()


class PatchNCELoss(nn.Module):
    """InfoNCE between each output patch (query) and the input patch at the same place (positive),
    against the other sampled patches of the same image (negatives). Returns one loss per patch.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, feat_q: torch.Tensor, feat_k: torch.Tensor, batch_size: int) -> torch.Tensor:
        # feat_q, feat_k: (B*P, D), L2-normalised; rows of one image are contiguous
        feat_q, feat_k = feat_q.float(), feat_k.detach().float()
        n, dim = feat_q.shape
        l_pos = (feat_q * feat_k).sum(dim=1, keepdim=True)  # (B*P, 1)
        q = feat_q.view(batch_size, -1, dim)
        k = feat_k.view(batch_size, -1, dim)
        p = q.shape[1]
        l_neg = torch.bmm(q, k.transpose(1, 2))  # (B, P, P)
        # The diagonal is the positive pair: mask it out of the negatives (as the paper code).
        diagonal = torch.eye(p, dtype=torch.bool, device=q.device)[None]
        l_neg = l_neg.masked_fill(diagonal, -10.0).view(n, p)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature  # (B*P, 1+P)
        target = torch.zeros(n, dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target, reduction="none")  # (B*P,)


class ImagePool:
    """History of generated images (Shrivastava et al. 2017): D sees a mix of current and older
    fakes, which damps oscillation between G and D.

    Randomness comes from the `rng` passed to `query`, and the stored images are a plain tensor,
    so the pool is restored exactly from a checkpoint.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: torch.Tensor | None = None  # (N, C, H, W) float32, N <= size

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    def query(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """A batch the size of `images`: each one either itself or a swapped-out older one."""
        images = images.detach().float()
        if self.size == 0:
            return images
        if self.images is not None and self.images.device != images.device:
            self.images = self.images.to(images.device)
        out = []
        for image in images:
            if len(self) < self.size:
                self.images = (
                    image[None].clone()
                    if self.images is None
                    else torch.cat([self.images, image[None]])
                )
                out.append(image)
            elif torch.rand((), generator=rng).item() > 0.5:
                idx = int(torch.randint(self.size, (), generator=rng))
                out.append(self.images[idx].clone())
                self.images[idx] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, object]:
        # a copy: the pool changes in place later, a saved state must not
        images = torch.empty(0) if self.images is None else self.images.cpu().clone()
        return {"size": self.size, "images": images}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the saved images, on the CPU; the next query moves them to its own device."""
        images = state["images"]
        if state["size"] != self.size or not isinstance(images, torch.Tensor):
            raise ValueError(f"pool of size {state['size']} saved, size {self.size} expected")
        self.images = None if images.numel() == 0 else images.clone()
