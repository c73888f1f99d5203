"""Networks and losses: sizes of the paper's reference models, shapes, init, and loss behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from culturegan.config import DiscriminatorConfig, GeneratorConfig, TrainConfig, patch_output_size
from culturegan.errors import ConfigError
from culturegan.models import networks
from culturegan.models.layoutcheck import check_channels_last, layout_errors
from culturegan.models.losses import GANLoss, ImagePool, PatchNCELoss
from culturegan.models.networks import (
    BlurPool,
    InstanceNorm,
    PatchDiscriminator,
    PatchSampleMLP,
    ResizeConv,
    ResnetGenerator,
    count_params,
    init_weights,
    sample_patch_ids,
)

TINY_G = GeneratorConfig(ngf=8, n_blocks=1)
TINY_D = DiscriminatorConfig(ndf=8, n_layers=2)


def test_reference_generator_has_the_paper_codes_11_38m_parameters():
    # resnet_9blocks, ngf 64: parameter count does not depend on the image size, so no 256px pass
    assert count_params(ResnetGenerator(GeneratorConfig(ngf=64, n_blocks=9))) == 11_378_179


def test_reference_patchgan_has_the_paper_codes_2_76m_parameters():
    assert count_params(PatchDiscriminator(DiscriminatorConfig(ndf=64, n_layers=3))) == 2_764_737


def test_cpu_default_generator_is_about_half_a_million_parameters():
    # ngf 16: at the default run's CPU budget, twice the steps of ngf 32 transfer better (docs/quality.md)
    assert count_params(ResnetGenerator(TrainConfig().generator)) == 494_083


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("size", [16, 32])
def test_generator_keeps_image_shape_and_tanh_range(norm, size):
    g = init_weights(ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, norm=norm)))
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = g(x)
    assert y.shape == (2, 3, size, size)  # (B, C, H, W)
    assert y.abs().max() <= 1


def test_decoder_norm_sets_only_the_two_upsampling_layers_norms_and_same_is_the_plain_generator():
    nb = 2
    mixed = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=nb, decoder_norm="batch"))
    up_norms = {11 + nb, 14 + nb}  # after each upsampling conv (layers 10+nb and 13+nb)
    norms = (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)
    kinds = {i: type(m) for i, m in enumerate(mixed.layers) if isinstance(m, norms)}
    assert {i for i, k in kinds.items() if k is torch.nn.BatchNorm2d} == up_norms
    assert all(k is InstanceNorm for i, k in kinds.items() if i not in up_norms)
    instance_norms = [m for m in mixed.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(instance_norms) == 3 + 2 * nb  # stem, two downsamplings, two per residual block
    for i in (10 + nb, 13 + nb):  # a bias before BatchNorm is cancelled: the upsampling convs have none
        assert mixed.layers[i][2].bias is None
    init_weights(mixed)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert mixed(x).shape == x.shape
    mixed.eval()  # running statistics, so one image alone is fine
    assert mixed(x[:1]).shape == (1, 3, 16, 16)
    # "same" builds the generator that has no decoder_norm at all, key for key
    same = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=nb, decoder_norm="same"))
    plain = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=nb))
    assert same.state_dict().keys() == plain.state_dict().keys()
    assert count_params(same) == count_params(plain)


def test_generator_features_match_declared_channels_and_one_pass_equals_encoder_only_pass():
    g = init_weights(ResnetGenerator(TINY_G))
    layers = (0, 4, 8, 12, 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    image, feats = g.forward_with_features(x, layers)
    assert torch.allclose(image, g(x))
    assert [f.shape[1] for f in feats] == [g.channels[i] for i in layers]
    assert feats[0].shape[-1] == 32 + 6  # layer 0 is the reflection-padded input
    assert feats[1].shape[-1] == 16  # after the first stride-2 conv
    for a, b in zip(feats, g.features(x, layers), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("size", "n_layers"), [(16, 1), (32, 2), (64, 3)])
def test_patchgan_output_size_matches_formula(size, n_layers):
    d = PatchDiscriminator(DiscriminatorConfig(ndf=8, n_layers=n_layers))
    out = d(torch.zeros(2, 3, size, size))
    side = patch_output_size(size, n_layers)
    assert out.shape == (2, 1, side, side)


@pytest.mark.parametrize(("size", "n_layers"), [(16, 1), (30, 2), (33, 2), (64, 3)])
def test_antialiased_patchgan_has_the_strided_ones_output_size_and_parameters(size, n_layers):
    cfg = DiscriminatorConfig(ndf=8, n_layers=n_layers, antialias=True)
    d = PatchDiscriminator(cfg)
    out = d(torch.zeros(2, 3, size, size))
    side = patch_output_size(size, n_layers)
    assert out.shape == (2, 1, side, side)
    plain = PatchDiscriminator(cfg.model_copy(update={"antialias": False}))
    assert count_params(d) == count_params(plain)
    assert sum(isinstance(m, BlurPool) for m in d.modules()) == n_layers


def test_blurpool_low_passes_before_subsampling():
    blur = BlurPool(2)
    # a constant image stays constant (the kernel sums to 1, reflection padding adds no border)
    assert torch.allclose(blur(torch.full((1, 2, 8, 8), 0.7)), torch.full((1, 2, 4, 4), 0.7))
    # the finest stripes (period 2): stride-2 sampling sees all ones or all zeros depending on the
    # phase (aliasing); the blur sees their mean, whatever the phase
    stripes = (torch.arange(8) % 2).float().expand(1, 2, 8, 8)
    assert torch.allclose(blur(stripes), torch.full((1, 2, 4, 4), 0.5))
    assert torch.allclose(blur(1 - stripes), torch.full((1, 2, 4, 4), 0.5))
    assert set(stripes[..., ::2].unique().tolist()) == {0.0}  # what a stride-2 tap would read
    assert blur.state_dict() == {}  # a constant, not a parameter: checkpoints do not change


def test_antialiased_generator_keeps_layer_indices_shapes_and_parameters():
    cfg = GeneratorConfig(ngf=8, n_blocks=2, antialias=True)
    g = init_weights(ResnetGenerator(cfg))
    plain = ResnetGenerator(cfg.model_copy(update={"antialias": False}))
    assert count_params(g) == count_params(plain)
    assert len(g.layers) == len(plain.layers)
    assert g.channels == plain.channels  # CUT's nce_layers tap the same layers
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    image, feats = g.forward_with_features(x, (0, 4, 7, 10))
    assert image.shape == x.shape and image.abs().max() <= 1
    # the downsampling convs run at stride 1; the BlurPool after each ReLU halves the side
    assert [f.shape[-1] for f in feats] == [38, 32, 16, 8]
    assert sum(isinstance(m, BlurPool) for m in g.modules()) == 2
    # a generator file from before the option (no key) loads as the plain generator
    assert GeneratorConfig.model_validate({"ngf": 8, "n_blocks": 2}).antialias is False


def test_patchgan_too_deep_for_image_size_is_detected_by_formula():
    assert patch_output_size(16, 3) < 1


def test_init_weights_draws_conv_weights_with_std_002_and_zero_biases():
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(GeneratorConfig(ngf=16, n_blocks=2)))
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.002
    assert abs(weights.mean().item()) < 0.002
    assert all(m.bias is None or torch.all(m.bias == 0) for m in convs)


def test_init_weights_sets_batchnorm_scales_near_one():
    d = init_weights(PatchDiscriminator(DiscriminatorConfig(ndf=16, n_layers=3, norm="batch")))
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(
        abs(m.weight.mean().item() - 1) < 0.02 and torch.all(m.bias == 0) for m in bns
    )


def test_lsgan_loss_is_mean_squared_distance_to_target():
    loss = GANLoss()
    pred = torch.tensor([[0.0, 1.0], [0.5, 2.0]])
    assert loss(pred, True).item() == pytest.approx((1 + 0 + 0.25 + 1) / 4)
    assert loss(pred, False).item() == pytest.approx((0 + 1 + 0.25 + 4) / 4)


def test_patchnce_matches_hand_computed_infonce():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)  # B=2 images x P=3 patches
    k = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    t = 0.07
    losses = PatchNCELoss(t)(q, k, batch_size=2)
    expected = []
    for b in range(2):
        qb, kb = q[3 * b : 3 * b + 3], k[3 * b : 3 * b + 3]
        for i in range(3):
            pos = qb[i] @ kb[i]
            negs = [qb[i] @ kb[j] for j in range(3) if j != i] + [
                torch.tensor(-10.0)
            ]  # masked diagonal
            logits = torch.stack([pos, *negs]) / t
            expected.append(-(pos / t) + torch.logsumexp(logits, 0))
    assert torch.allclose(losses, torch.stack(expected), atol=1e-5)


def test_patchnce_is_lower_when_queries_match_their_own_keys():
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    aligned = PatchNCELoss()(k.clone(), k, batch_size=2).mean()
    shuffled = PatchNCELoss()(k[torch.randperm(32)], k, batch_size=2).mean()
    assert aligned < shuffled
    assert aligned < math.log(16)  # better than chance among 16 candidates per image


def test_patchnce_gives_no_gradient_to_keys():
    q = torch.nn.functional.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    PatchNCELoss()(q, k, batch_size=2).mean().backward()
    assert q.grad is not None and k.grad is None


def test_patch_sampler_takes_same_locations_for_every_image_and_normalises():
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    head = init_weights(PatchSampleMLP([3, 5], dim=6))
    ids = sample_patch_ids(feats, num_patches=10, rng=torch.Generator().manual_seed(1))
    assert [i.numel() for i in ids] == [10, 10]
    assert ids[1].unique().numel() == 10 and ids[1].max() < 16
    out = head(feats, ids)
    assert [o.shape for o in out] == [(20, 6), (20, 6)]
    assert torch.allclose(out[0].norm(dim=1), torch.ones(20), atol=1e-3)  # eps 1e-7 as in CUT
    # a feature map with fewer locations than num_patches gives all of them
    assert sample_patch_ids([torch.randn(1, 2, 2, 2)], 10, torch.Generator())[0].numel() == 4


def test_image_pool_fills_then_mixes_history_and_restores_exactly():
    rng = torch.Generator().manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first, rng), first)  # filling: images pass through
    assert len(pool) == 4
    state = pool.state_dict()
    rng_state = rng.get_state()
    new = torch.full((8, 1, 1, 1), 9.0)
    out = pool.query(new, rng)
    assert out.shape == new.shape
    assert (out != 9).any() and (out == 9).any()  # some swapped for history, some not
    restored = ImagePool(4)
    restored.load_state_dict(state)
    rng.set_state(rng_state)
    assert torch.equal(restored.query(new, rng), out)


def test_image_pool_of_size_zero_passes_images_through():
    x = torch.randn(3, 3, 4, 4)
    assert torch.equal(ImagePool(0).query(x, torch.Generator()), x)


def test_resize_upsampling_replaces_transposed_convs_with_the_same_parameter_count():
    resize = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, upsample="resize"))
    transposed = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, upsample="transposed"))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in transposed.modules())
    assert count_params(resize) == count_params(transposed)
    assert len(resize.layers) == len(transposed.layers)  # CUT's nce_layers index both alike


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (16, 16)])
def test_resize_conv_equals_upsample_pad_conv_in_value_and_gradient(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    layer = init_weights(ResizeConv(6, 5, bias=True))
    torch.nn.init.normal_(layer[2].bias)
    x = torch.randn(3, 6, *size, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    fast, plain = layer(x), layer.plain_forward(x)
    assert fast.shape == plain.shape == (3, 5, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(plain)
    grads = [torch.autograd.grad((y * g).sum(), (x, layer[2].weight, layer[2].bias)) for y in (layer(x), layer.plain_forward(x))]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_resize_conv_pads_the_same_way_when_torch_compile_traces_it() -> None:
    # Under torch.compile ResizeConv replicate-pads by concatenating border slices (inductor
    # mis-traces replication_pad2d's backward); values and gradients must be those of F.pad.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    ref = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    cat = networks._replicate_pad1(x)
    assert torch.equal(ref, cat)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), x)
    (grad_cat,) = torch.autograd.grad((cat * g).sum(), x)
    torch.testing.assert_close(grad_ref, grad_cat, rtol=1e-12, atol=1e-12)

    layer = init_weights(ResizeConv(3, 4, bias=True)).double()
    targets: list[str] = []

    def backend(gm, example_inputs):  # dynamo alone: no C++ compiler needed
        targets.extend(str(n.target) for n in gm.graph.nodes)
        return gm.forward

    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-12, atol=1e-12)
    assert any("cat" in t for t in targets)
    assert not any("pad" in t for t in targets), targets


def test_resize_conv_keeps_the_plain_layers_state_dict_and_the_generators_function() -> None:
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, upsample="resize")))
    ups = [m for m in g.modules() if isinstance(m, ResizeConv)]
    assert len(ups) == 2 and all(k.split(".")[-2] == "2" for m in ups for k in m.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        fast = g(x)
        for m in ups:
            m.forward = m.plain_forward  # the generator as it was before ResizeConv
        plain = g(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_instance_norm_as_group_norm_equals_instance_norm_in_value_and_gradient(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = (torch.randn(3, 8, 5, 7, dtype=torch.float64) * 3 + 2).to(dtype).requires_grad_()
    g = torch.randn(3, 8, 5, 7, dtype=torch.float64).to(dtype)
    layer, ref = InstanceNorm(8), torch.nn.InstanceNorm2d(8, affine=False, track_running_stats=False)
    calls: list[str] = []
    layer.register_forward_hook(lambda *_: calls.append("fast"))
    y_fast, y_ref = layer(x), ref(x)
    (gx_fast,) = torch.autograd.grad((y_fast * g).sum(), x)
    (gx_ref,) = torch.autograd.grad((y_ref * g).sum(), x)
    # one ulp of the dtype at the outputs' size (|y| <= ~3): float rounding, not another function
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx_fast, gx_ref, rtol=tol, atol=tol)
    assert y_fast.dtype == dtype and calls == ["fast"]
    # a wrong axis would not be close: normalising over channels instead of pixels differs
    wrong = torch.nn.functional.layer_norm(x.detach().double(), x.shape[1:])
    assert not torch.allclose(y_fast.double(), wrong, atol=0.1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_instance_norm_of_channels_last_inputs_equals_instance_norm_and_keeps_the_layout(batch: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    cl = torch.channels_last
    x = (torch.randn(batch, 8, 5, 7, dtype=torch.float64) * 3 + 2).to(dtype).contiguous(memory_format=cl).requires_grad_()
    g = torch.randn(batch, 8, 5, 7, dtype=torch.float64).to(dtype).contiguous(memory_format=cl)
    y_fast = InstanceNorm(8)(x)
    (gx_fast,) = torch.autograd.grad((y_fast * g).sum(), x)
    # The reference in the default layout: torch 2.14.1's F.instance_norm gives a single
    # channels-last image with a channels-last gradient a wrong input gradient (docs/benchmarks.md).
    x_ref = x.detach().contiguous().requires_grad_()
    y_ref = torch.nn.functional.instance_norm(x_ref, eps=1e-5)
    (gx_ref,) = torch.autograd.grad((y_ref * g.contiguous()).sum(), x_ref)
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx_fast, gx_ref, rtol=tol, atol=tol)
    assert y_fast.is_contiguous(memory_format=cl) and not y_fast.is_contiguous()


def test_instance_norm_picks_its_kernel_by_layout_and_the_plain_path_keeps_instance_norm(monkeypatch) -> None:
    used: list[str] = []
    fn = torch.nn.functional
    originals = {name: getattr(fn, name) for name in ("group_norm", "batch_norm", "instance_norm")}
    for name, f in originals.items():
        monkeypatch.setattr(fn, name, lambda *a, _n=name, _f=f, **k: used.append(_n) or _f(*a, **k))
    layer = InstanceNorm(4)
    x = torch.randn(2, 4, 6, 6)
    layer(x)
    layer(x.contiguous(memory_format=torch.channels_last))  # batch norm image by image
    layer(x.transpose(2, 3))  # neither layout
    layer.fast = False
    plain = layer(x)
    assert used == ["group_norm", "batch_norm", "batch_norm", "instance_norm", "instance_norm"]
    torch.testing.assert_close(plain, originals["group_norm"](x, 4, eps=1e-5), rtol=2e-6, atol=2e-6)


def test_instance_norm_keeps_the_state_dict_of_torchs_and_every_generator_and_discriminator_uses_it() -> None:
    assert InstanceNorm(8).state_dict() == {} and isinstance(InstanceNorm(8), torch.nn.InstanceNorm2d)
    g, d = ResnetGenerator(TINY_G), PatchDiscriminator(TINY_D)
    for net in (g, d):
        norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
        assert norms and all(type(m) is InstanceNorm for m in norms)


def test_layout_check_flags_a_wrong_gradient_or_a_wrong_output_and_passes_a_right_norm():
    def right(x: torch.Tensor) -> torch.Tensor:  # the formula, in float32
        x32 = x.float()
        mean, var = x32.mean(dim=(2, 3), keepdim=True), x32.var(dim=(2, 3), unbiased=False, keepdim=True)
        return ((x32 - mean) / torch.sqrt(var + 1e-5)).to(x.dtype)

    def no_gradient(x: torch.Tensor) -> torch.Tensor:  # right values, gradient zero
        return right(x.detach()) + 0 * x

    def wrong_axis(x: torch.Tensor) -> torch.Tensor:  # normalised over channels, not pixels
        return torch.nn.functional.layer_norm(x, x.shape[1:])

    for x_cl, g_cl in ((False, False), (False, True), (True, False), (True, True)):
        assert layout_errors(right, "cpu", "float32", 1, x_cl, g_cl)["ok"]
        assert layout_errors(right, "cpu", "bfloat16", 2, x_cl, g_cl)["ok"]
        bad_grad = layout_errors(no_gradient, "cpu", "float32", 1, x_cl, g_cl)
        assert not bad_grad["ok"] and bad_grad["output_error"] < 1e-5 and bad_grad["gradient_error"] > 0.1
        assert not layout_errors(wrong_axis, "cpu", "bfloat16", 2, x_cl, g_cl)["ok"]


def test_channels_last_check_passes_the_networks_norm_and_names_the_key_for_a_faulty_one(monkeypatch):
    for precision in ("fp32", "bf16", "bf16-full"):
        check_channels_last(torch.device("cpu"), precision)  # InstanceNorm is right on the CPU

    def zero_gradient(self, x: torch.Tensor) -> torch.Tensor:  # right values, no gradient
        return torch.nn.functional.instance_norm(x.detach().contiguous(), eps=1e-5) + 0 * x

    monkeypatch.setattr(InstanceNorm, "forward", zero_gradient)
    with pytest.raises(ConfigError, match=r"train.channels_last.*wrong gradient.*float32") as info:
        check_channels_last(torch.device("cpu"), "fp32")
    assert "channels_last: false" in info.value.hint


def test_freshly_reset_residual_generator_returns_its_input():
    g = init_weights(ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, residual=True)))
    g.reset_output()
    x = torch.rand(2, 3, 16, 16) * 1.8 - 0.9  # inside the atanh clamp
    assert torch.allclose(g(x), x, atol=1e-5)
    plain = init_weights(ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=1, residual=False)))
    plain.reset_output()  # a no-op without residual mode
    assert not torch.allclose(plain(x), x, atol=1e-2)
