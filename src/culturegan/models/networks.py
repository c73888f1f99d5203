"""Networks: the ResNet generator and PatchGAN discriminator of CycleGAN/CUT, and CUT's MLP head.

Code names vs paper names (Zhu et al. 2017, CycleGAN; Park et al. 2020, CUT):
  ResnetGenerator      G (and F, the reverse generator, in CycleGAN); "resnet_9blocks" in the
                       paper code, after Johnson et al. 2016
  PatchDiscriminator   D_X / D_Y, the 70x70 PatchGAN ("basic", n_layers=3)
  PatchSampleMLP       H_l, CUT's per-layer 2-layer MLP projection head ("netF")
"""

from __future__ import annotations

import torch
from torch import nn

from culturegan.config import GENERATOR_STRIDE, DiscriminatorConfig, GeneratorConfig

N_DOWN = 2  # stride-2 convolutions in the generator's encoder (and 2x upsamplings in the decoder)
assert 2**N_DOWN == GENERATOR_STRIDE  # config refuses image sizes by this rule
_EDGE = 0.995  # inputs are clamped to +-this before atanh: |atanh| <= 3, no infinities at +-1


def _upsample(kind: str, c_in: int, c_out: int, bias: bool) -> nn.Module:
    """2x upsampling. A stride-2 transposed conv overlaps its kernel unevenly and paints a
    checkerboard until trained away; nearest-neighbour resize then a 3x3 conv cannot (Odena et
    al. 2016, "Deconvolution and Checkerboard Artifacts")."""
    if kind == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias)
    return ResizeConv(c_in, c_out, bias)


# Which taps of a 3-tap kernel land on each tap of the equivalent 4-tap stride-2 transposed
# kernel (ResizeConv): k0 = w2, k1 = w1 + w2, k2 = w0 + w1, k3 = w0.
_RESIZE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def _replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """F.pad(x, (1, 1, 1, 1), mode="replicate") by concatenating border slices: the same values,
    for torch.compile, whose graphs trace replication_pad2d's backward with a wrong memory layout
    (inductor on a CPU fails with "expected size 32==32, stride 1==1024")."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


class ResizeConv(nn.Sequential):
    """Nearest-neighbour 2x upsampling, reflection pad 1, 3x3 conv, computed as one stride-2
    transposed convolution of the input replicate-padded by 1, with the 4x4 kernel that the 3x3
    one makes (its taps summed per output phase: _RESIZE_TAPS). The same function to float
    rounding, for 4/9 of the multiply-adds and without the upsampled copy: 3-4x faster for these
    layers on a CPU (docs/benchmarks.md). Reflecting the upsampled image by one pixel repeats its
    border pixel, which is the input's border pixel: hence the replicate pad.

    The three layers stay its children, so its parameters, their initialisation and the
    state_dict keys are those of the plain Sequential; `plain_forward` runs them one after the
    other (the tests compare the two), and so does `forward` with `fast` off (the benchmark's
    plain path)."""

    def __init__(self, c_in: int, c_out: int, bias: bool) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c_in, c_out, 3, bias=bias),
        )
        self.register_buffer("taps", torch.tensor(_RESIZE_TAPS), persistent=False)
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return self.plain_forward(x)
        conv = self[2]
        taps = self.taps.to(conv.weight.dtype)
        kernel = torch.einsum("ku,lv,oiuv->iokl", taps, taps, conv.weight)  # (C_in, C_out, 4, 4)
        padded = (
            _replicate_pad1(x)
            if torch.compiler.is_compiling()
            else nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        )
        return nn.functional.conv_transpose2d(padded, kernel, conv.bias, stride=2, padding=3)

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class BlurPool(nn.Module):
    """Anti-aliased 2x downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant
    Again"): reflection pad 1, the binomial [1, 2, 1] x [1, 2, 1] / 16 low-pass per channel, then
    every second pixel. Placed after a stride-1 conv and its activation it replaces a stride-2
    conv, as the CUT paper code does by default; a plain stride-2 conv samples the activations
    without a low-pass and aliases their fine detail into a regular grid. Output side: ceil(H / 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        tap = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(tap, tap) / 16.0
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        kernel = self.kernel.to(x.dtype)
        return nn.functional.conv2d(padded, kernel, stride=2, groups=kernel.shape[0])  # (B, C, H/2, W/2)


def _downsample(antialias: bool, c_in: int, c_out: int, kernel: int, padding: int, bias: bool):
    """The conv of a 2x downsampling step and what follows its activation: a stride-2 conv and
    nothing (the CycleGAN paper code), or with `antialias` a stride-1 conv and a BlurPool."""
    if antialias:
        return nn.Conv2d(c_in, c_out, kernel, stride=1, padding=padding, bias=bias), [BlurPool(c_out)]
    return nn.Conv2d(c_in, c_out, kernel, stride=2, padding=padding, bias=bias), []


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm without affine parameters or running statistics, as in the paper code: every
    image and channel normalised alone over its pixels. On a CPU it is computed with kernels that
    give the same statistics and output to float rounding, faster (docs/benchmarks.md):

    - inputs in the default layout: group norm with one group per channel, one native kernel where
      `F.instance_norm` reshapes the batch into a batch norm (1.2-2x faster forward and backward);
    - channels-last inputs: batch norm of each image alone (batch norm's CPU kernel keeps the
      layout, where `F.instance_norm` copies to the default layout and the next channels-last
      convolution copies back; group norm's channels-last bf16 kernel is slow).

    Other devices (not measured) and `fast` off (the benchmark's plain path) keep
    `F.instance_norm`. No parameters or buffers: state_dicts are those of `nn.InstanceNorm2d`."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False, track_running_stats=False)
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and x.device.type == "cpu" and x.dim() == 4:
            if x.is_contiguous():
                return nn.functional.group_norm(x, x.shape[1], eps=self.eps)
            if x.is_contiguous(memory_format=torch.channels_last):
                images = [nn.functional.batch_norm(t, None, None, training=True, eps=self.eps) for t in x.split(1)]
                return images[0] if len(images) == 1 else torch.cat(images)
        return super().forward(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    # Identity keeps the layer indices (CUT's nce_layers) the same for every norm choice.
    return nn.Identity()


def _conv_bias(kind: str) -> bool:
    # A bias before BatchNorm is cancelled by its mean subtraction; InstanceNorm here has no
    # affine parameters, so the conv keeps its bias (the paper code's choice).
    return kind != "batch"


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection padded so borders carry no zero artefacts."""

    def __init__(self, dim: int, norm: str) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(norm, dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(norm, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # (B, C, H, W)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks, u2ngf, ungf, c7s1-3; images in [-1, 1].

    cfg.norm normalises every layer but the two upsamplings (u2ngf, ungf), which use
    cfg.decoder_norm ("same": cfg.norm too).

    With cfg.residual the last layer's output is added to the input (in atanh space) rather than
    being the image, so a freshly reset generator is the identity map.

    The layers form one flat list so CUT can tap the output of any of them by index (nce_layers):
    0 padded input, 1-3 stem conv/norm/relu, 4-9 the two downsamplings (conv, norm, relu each),
    10 .. 9+n_blocks residual blocks, then 6 upsampling layers and pad/conv/tanh.
    """

    def __init__(self, cfg: GeneratorConfig, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        ngf, norm, bias = cfg.ngf, cfg.norm, _conv_bias(cfg.norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        channels = [in_channels, ngf, ngf, ngf]
        for i in range(N_DOWN):
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
            conv, blur = _downsample(cfg.antialias, c_in, c_out, 3, 1, bias)
            # with antialias the BlurPool shares the ReLU's slot, so layer indices do not move
            act = nn.Sequential(nn.ReLU(True), *blur) if blur else nn.ReLU(True)
            layers += [conv, _norm(norm, c_out), act]
            channels += [c_out] * 3
        width = ngf * 2**N_DOWN
        for _ in range(cfg.n_blocks):
            layers.append(ResnetBlock(width, norm))
            channels.append(width)
        up_norm = norm if cfg.decoder_norm == "same" else cfg.decoder_norm
        for i in range(N_DOWN):
            c_in, c_out = ngf * 2 ** (N_DOWN - i), ngf * 2 ** (N_DOWN - i - 1)
            up = _upsample(cfg.upsample, c_in, c_out, _conv_bias(up_norm))
            layers += [up, _norm(up_norm, c_out), nn.ReLU(True)]
            channels += [c_out] * 3
        # Residual mode: the head's output is a change in tanh-preactivation space, added to the
        # input's (see forward); its last conv starts at zero, so G starts as the identity.
        head_act: nn.Module = nn.Identity() if cfg.residual else nn.Tanh()
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), head_act]
        channels += [ngf, out_channels, out_channels]
        self.layers = nn.ModuleList(layers)
        self.channels = channels  # output channels of each layer, for sizing CUT's MLP head
        self.residual = cfg.residual and in_channels == out_channels

    def reset_output(self) -> None:
        """Zero the last conv in residual mode: the generator then returns its input exactly
        (up to the tanh round trip), and training starts from content that is already right."""
        if self.residual:
            last = self.layers[-2]
            assert isinstance(last, nn.Conv2d)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return out
        # atanh(x) + delta, then tanh: the output stays in (-1, 1) without clamping away
        # gradients, and delta = 0 gives back the input.
        base = torch.atanh(x.float().clamp(-_EDGE, _EDGE))
        return torch.tanh(base + out.float()).to(out.dtype)

    def forward(
        self, x: torch.Tensor, layer_ids: tuple[int, ...] = (), encode_only: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(B, 3, H, W) -> (B, 3, H, W), H and W multiples of 4.

        With `layer_ids`: (image, outputs of those layers) from one pass; `encode_only` stops
        after the last listed layer and returns (None, features), as CUT's encode_only. One
        entry point, so `Module.compile()` covers every use.
        """
        inp = x
        if not layer_ids:
            for layer in self.layers:
                x = layer(x)
            return self._finish(inp, x)
        wanted, last = set(layer_ids), max(layer_ids)
        feats = []
        for i, layer in enumerate(self.layers):
            if encode_only and i > last:
                return None, feats
            x = layer(x)
            if i in wanted:
                feats.append(x)  # (B, C_i, H_i, W_i)
        return self._finish(inp, x), feats

    def forward_with_features(
        self, x: torch.Tensor, layer_ids: tuple[int, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output image and the outputs of the layers in `layer_ids`, from one pass."""
        image, feats = self(x, tuple(layer_ids))
        assert image is not None
        return image, feats

    def features(self, x: torch.Tensor, layer_ids: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of the layers in `layer_ids`, stopping after the last one."""
        return self(x, tuple(layer_ids), encode_only=True)[1]


class PatchDiscriminator(nn.Module):
    """PatchGAN: C64-C128-C256-C512 (for n_layers=3, ndf=64) then a 1-channel conv.

    Each output score sees one overlapping patch (70x70 pixels for n_layers=3), so the
    discriminator judges texture and local style, not global layout, at any image size.
    """

    def __init__(self, cfg: DiscriminatorConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        ndf, norm, bias = cfg.ndf, cfg.norm, _conv_bias(cfg.norm)
        # with antialias each 4x4 conv runs at stride 1 (side H - 1) and a BlurPool halves it:
        # ceil((H - 1) / 2) = floor(H / 2), the stride-2 conv's side, so patch_output_size holds
        conv, blur = _downsample(cfg.antialias, in_channels, ndf, 4, 1, True)
        layers: list[nn.Module] = [conv, nn.LeakyReLU(0.2, True), *blur]
        mult = 1
        for n in range(1, cfg.n_layers):
            prev, mult = mult, min(2**n, 8)
            conv, blur = _downsample(cfg.antialias, ndf * prev, ndf * mult, 4, 1, bias)
            layers += [conv, _norm(norm, ndf * mult), nn.LeakyReLU(0.2, True), *blur]
        prev, mult = mult, min(2**cfg.n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
            _norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) -> (B, 1, H', W'), H' = H / 2**n_layers - 2: config.patch_output_size,
        # by which params.yaml is refused when the images are too small for n_layers
        return self.model(x)


class PatchSampleMLP(nn.Module):
    """CUT's H_l: samples the same random locations from each tapped feature map, projects them
    with a 2-layer MLP per layer, and L2-normalises (so PatchNCE compares cosine similarities)."""

    def __init__(self, in_channels: list[int], dim: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(True), nn.Linear(dim, dim))
            for c in in_channels
        )

    def forward(
        self, feats: list[torch.Tensor], patch_ids: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        out = []
        for feat, ids, mlp in zip(feats, patch_ids, self.mlps, strict=True):
            b, c = feat.shape[:2]
            x = feat.flatten(2)[:, :, ids]  # (B, C, P): the same P locations in every image
            x = x.transpose(1, 2).reshape(b * ids.numel(), c)  # (B*P, C)
            x = mlp(x).float()
            out.append(x / (x.norm(dim=1, keepdim=True) + 1e-7))  # (B*P, dim)
        return out


def sample_patch_ids(
    feats: list[torch.Tensor], num_patches: int, rng: torch.Generator
) -> list[torch.Tensor]:
    """Random locations per feature map, drawn from `rng` (checkpointed; identical on all ranks)."""
    ids = []
    for feat in feats:
        hw = feat.shape[2] * feat.shape[3]
        perm = torch.randperm(hw, generator=rng)[: min(num_patches, hw)]
        ids.append(perm.to(feat.device))
    return ids


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, gain) conv/linear weights, N(1, gain) BatchNorm scales, zero biases (the paper code)."""

    def init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    module.apply(init)
    return module


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
