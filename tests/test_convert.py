"""The published checkpoints: a PyTorch reference of the release's network (written here from its
layout, docs/DESIGN.md "Published checkpoints", with a plain corner-gather trilinear shift) saved in
the release's format, converted by rubiks_jax.convert, and the logits compared."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from rubiks_jax.convert import VARIANTS, convert_state_dict, from_official, official_key
from rubiks_jax.models import TIERS
from rubiks_jax.ops import rubiks_shift

# (tier, variant) -> (state_dict keys, parameters) at 174 classes: the published checkpoints'
# (docs/DESIGN.md) for rubiks3d. AQ: per block 2 more keys (conv2.0.T, conv2.0.weight), a (2, C)
# spatial shift instead of (3, C), C_in x 3 attention logits and the scalar T.
OFFICIAL_COUNTS = {("tiny", "rubiks3d"): (233, 1_898_760), ("small", "rubiks3d"): (267, 3_597_366),
                   ("medium", "rubiks3d"): (454, 6_185_622),
                   ("large", "rubiks3d"): (675, 8_538_294)}
AQ_KEYS = {"tiny": 267, "large": 777}
PARITY_CASES = [("tiny", "rubiks3d"), ("small", "rubiks3d"), ("medium", "rubiks3d"),
                ("large", "rubiks3d"), ("tiny", "rubiks3d-aq"), ("large", "rubiks3d-aq")]
TOLERANCE = 1e-4  # max |logit difference|, our float32 against the float64 reference


# ------------------------------------------------------------------------------------------------
# The reference: the release's modules, names and layouts (input (N, T, 3, H, W), NCHW features)


def reference_shift(x: torch.Tensor, shift: torch.Tensor, stride: int) -> torch.Tensor:
    """Trilinear shift of x (N, T, C, H, W) by shift (3, C), rows (dt, dh, dw): output (t, h, w)
    reads input (t + dt, h*s + dh, w*s + dw), zero outside. Returns (N, T, C, ceil(H/s), ceil(W/s))
    as the sum of the eight corner gathers."""
    n, t, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    q = torch.floor(shift)
    r = (shift - q).reshape(3, 1, c, 1, 1)
    q = q.long()
    # First corner of every output point per channel, broadcast over (T, C, Ho, Wo).
    t0 = (torch.arange(t)[:, None] + q[0]).reshape(t, c, 1, 1)
    h0 = (torch.arange(ho)[None, :] * stride + q[1][:, None]).reshape(1, c, ho, 1)
    w0 = (torch.arange(wo)[None, :] * stride + q[2][:, None]).reshape(1, c, 1, wo)
    ch = torch.arange(c).reshape(1, c, 1, 1)
    out = x.new_zeros((n, t, c, ho, wo))
    for dt, dh, dw in itertools.product((0, 1), repeat=3):
        ti, hi, wi = t0 + dt, h0 + dh, w0 + dw
        valid = (ti >= 0) & (ti < t) & (hi >= 0) & (hi < h) & (wi >= 0) & (wi < w)
        weight = ((r[0] if dt else 1 - r[0]) * (r[1] if dh else 1 - r[1])
                  * (r[2] if dw else 1 - r[2]))
        corner = x[:, ti.clamp(0, t - 1), ch, hi.clamp(0, h - 1), wi.clamp(0, w - 1)]
        out = out + torch.where(valid, weight * corner, 0.0)
    return out


# The release's tier table: (width, blocks in layer1..4, squeeze-excite).
REFERENCE_TIERS = {"tiny": (54, (3, 4, 6, 3), False), "small": (72, (3, 4, 6, 3), True),
                   "medium": (72, (3, 4, 23, 3), False), "large": (72, (3, 8, 36, 3), False)}


def _frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(N*T, C, H, W) -> (N, T, C, H, W)."""
    return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:])


class Shift3D(nn.Module):
    """The release's RubiksShift3D: parameter `shift` (3, C), rows (T, H, W)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.shift = nn.Parameter(torch.empty(3, channels))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_shift(x, self.shift, self.stride)


class Rubiks3DWrap(nn.Module):
    """Block's `as3` in rubiks3d: (N*T, C, H, W) through `rubiks3d` on (N, T, C, H, W)."""

    def __init__(self, channels: int, stride: int, num_frames: int):
        super().__init__()
        self.rubiks3d = Shift3D(channels, stride)
        self.num_frames = num_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rubiks3d(_frames(x, self.num_frames)).flatten(0, 1)


class Shift2D(nn.Module):
    """The release's RubiksShift2D (AQ's `as3`): `shift` (2, C), rows (H, W), per frame."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.shift = nn.Parameter(torch.empty(2, channels))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = torch.cat([torch.zeros_like(self.shift[:1]), self.shift])
        return reference_shift(x[:, None], shift, self.stride)[:, 0]


class AttentionShift(nn.Module):
    """The release's AttentionShift: `weight` (C, 3) logits, `T` the temperature; a temporal
    cross-correlation with softmax(w / (std(w) + 1e-6) / T), std unbiased (torch.std)."""

    def __init__(self, channels: int, num_frames: int):
        super().__init__()
        self.T = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.weight = nn.Parameter(torch.empty(channels, 3))
        self.num_frames = num_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight / (torch.std(self.weight, dim=1, keepdim=True) + 1e-6)
        a = torch.softmax(a / self.T, dim=1).T.reshape(3, 1, 1, -1, 1, 1)
        v = nn.functional.pad(_frames(x, self.num_frames), (0, 0, 0, 0, 0, 0, 1, 1))
        t = self.num_frames
        return (a[0] * v[:, :t] + a[1] * v[:, 1:t + 1] + a[2] * v[:, 2:]).flatten(0, 1)


class SELayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // 12, bias=False), nn.ReLU(),
                                nn.Linear(channels // 12, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class Block(nn.Module):
    """The release's pre-activation RubiksShiftBlock (expansion 1)."""

    def __init__(self, cin: int, cout: int, stride: int, se: bool, aq: bool, num_frames: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Sequential(AttentionShift(cin, num_frames), conv) if aq else conv
        self.bn2 = nn.BatchNorm2d(cout)
        self.as3 = Shift2D(cout, stride) if aq else Rubiks3DWrap(cout, stride, num_frames)
        self.se = SELayer(cout) if se else None
        self.conv3 = nn.Conv2d(cout, cout, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        y = self.as3(torch.relu(self.bn2(self.conv2(a))))
        if self.se is not None:
            y = self.se(y)
        return self.conv3(y) + shortcut


class Backbone(nn.Module):
    def __init__(self, tier: str, aq: bool, num_frames: int):
        super().__init__()
        width, repeats, se = REFERENCE_TIERS[tier]
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        stages = [(width, 1, 1)] + [(width * 2 ** i, n, 2) for i, n in enumerate(repeats)]
        cin = width
        for s, (planes, n, stride) in enumerate(stages):
            blocks = []
            for b in range(n):
                blocks.append(Block(cin, planes, stride if b == 0 else 1, se, aq, num_frames))
                cin = planes
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.bn_last = nn.BatchNorm2d(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for s in range(5):
            x = getattr(self, f"layer{s}")(x)
        return torch.relu(self.bn_last(x)).mean((2, 3))


class ReferenceNet(nn.Module):
    """The release's RubiksNet: per-frame backbone, `new_fc`, mean of the frame logits."""

    def __init__(self, tier: str, num_classes: int, num_frames: int, variant: str):
        super().__init__()
        self.num_frames = num_frames
        self.backbone = Backbone(tier, variant == "rubiks3d-aq", num_frames)
        self.new_fc = nn.Linear(self.backbone.bn_last.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, 3, H, W) -> (N, classes)
        logits = self.new_fc(self.backbone(x.flatten(0, 1)))
        return _frames(logits, self.num_frames).mean(1)


def randomize(net: ReferenceNet, x: torch.Tensor, seed: int) -> None:
    """Random weights, shifts, attention and temperatures; BatchNorm affine parameters and running
    statistics random too, the statistics near those of `x`'s activations (mean off by up to 0.5
    standard deviations, variance scaled by 0.5..2 per channel) so the features stay O(1) through
    the deepest tier while every normalisation still matters."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    net.double()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                k, cout = module.kernel_size[0], module.out_channels
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / (k * k * cout))))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(normal(module.weight.shape, module.in_features ** -0.5))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(normal(module.bias.shape, 0.2))
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (), generator=g)))
            elif isinstance(module, (Shift3D, Shift2D)):
                module.shift.copy_(uniform(module.shift.shape, -1.5, 1.5))
            elif isinstance(module, AttentionShift):
                module.weight.copy_(uniform(module.weight.shape, 0.0, 1.0))
                module.T.fill_(float(uniform((), 0.2, 1.0)))

        def calibrate(module: nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
            v = inputs[0]
            mean, var = v.mean((0, 2, 3)), v.var((0, 2, 3))
            c = mean.shape[0]
            module.running_mean.copy_(mean + uniform((c,), -0.5, 0.5) * var.sqrt())
            module.running_var.copy_(var * uniform((c,), 0.5, 2.0) + 1e-3)

        hooks = [m.register_forward_pre_hook(calibrate) for m in net.modules()
                 if isinstance(m, nn.BatchNorm2d)]
        net.eval()(x)
        for hook in hooks:
            hook.remove()
    net.float().double()  # float32 values, as the file holds them: the reference sees the same


def save_official(net: ReferenceNet, tier: str, num_classes: int, variant: str, path) -> None:
    """The release's file format: {tier, num_classes, num_frames, variant, model: state_dict}."""
    torch.save({"tier": tier, "num_classes": num_classes, "num_frames": net.num_frames,
                "variant": variant,
                "model": {k: v.float() if v.is_floating_point() else v
                          for k, v in net.state_dict().items()}}, path)


def _parameter_count(state_dict: dict) -> int:
    """Parameters as the release counts them: every tensor but the running statistics."""
    return sum(v.numel() for k, v in state_dict.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def _leaf_count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------------------------------------
# The reference itself: its layout is the release's, its shift is our op's


@pytest.mark.parametrize("tier", sorted(REFERENCE_TIERS))
def test_reference_has_the_published_keys_and_parameters(tier):
    keys, params = OFFICIAL_COUNTS[(tier, "rubiks3d")]
    state_dict = ReferenceNet(tier, 174, 8, "rubiks3d").state_dict()
    assert (len(state_dict), _parameter_count(state_dict)) == (keys, params)
    assert TIERS[tier] == REFERENCE_TIERS[tier]


@pytest.mark.parametrize("tier", sorted(AQ_KEYS))
def test_reference_aq_keys(tier):
    state_dict = ReferenceNet(tier, 174, 8, "rubiks3d-aq").state_dict()
    width = REFERENCE_TIERS[tier][0]
    assert len(state_dict) == AQ_KEYS[tier]
    assert state_dict["backbone.layer2.0.conv2.0.T"].shape == ()
    assert state_dict["backbone.layer2.0.conv2.0.weight"].shape == (width, 3)  # C_in
    assert state_dict["backbone.layer2.0.conv2.1.weight"].shape == (2 * width, width, 1, 1)
    assert state_dict["backbone.layer2.0.as3.shift"].shape == (2, 2 * width)


@pytest.mark.parametrize("stride", [1, 2])
def test_reference_shift_is_our_op(stride):
    """The same convention, no sign flip: a positive shift reads the next frame / row / column."""
    g = torch.Generator().manual_seed(stride)
    x = torch.randn((2, 3, 5, 7, 6), generator=g, dtype=torch.float64)  # (N, T, C, H, W)
    shift = (torch.rand((3, 5), generator=g, dtype=torch.float64) * 5 - 2.5).float().double()
    expected = reference_shift(x, shift, stride).permute(0, 1, 3, 4, 2).numpy()
    ours = rubiks_shift(jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy(), jnp.float32),
                        jnp.asarray(shift.T.numpy(), jnp.float32), stride=(1, stride, stride))
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5)
    # Integer shift (1, 0, 0): frame t reads frame t + 1, the last frame reads zeros.
    one = torch.zeros((3, 5), dtype=torch.float64)
    one[0] = 1.0
    moved = reference_shift(x, one, 1)
    torch.testing.assert_close(moved[:, :2], x[:, 1:])
    assert not moved[:, 2].any()


# ------------------------------------------------------------------------------------------------
# Conversion


def _official_file(tmp_path, tier: str, variant: str, num_frames: int, x: torch.Tensor,
                   num_classes: int = 174, seed: int = 0) -> tuple[str, ReferenceNet]:
    net = ReferenceNet(tier, num_classes, num_frames, variant)
    randomize(net, x, seed)
    path = str(tmp_path / f"{tier}_{variant}.pth.tar")
    save_official(net, tier, num_classes, variant, path)
    return path, net


def _clip(num_frames: int, height: int = 40, width: int = 36, seed: int = 0) -> torch.Tensor:
    """Two random clips (N, T, 3, H, W), float64; 40x36 takes odd sizes (5, 3) at stride 2."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((2, num_frames, 3, height, width), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("tier, variant", PARITY_CASES)
def test_converted_logits_equal_the_reference(tmp_path, tier, variant):
    num_frames = 3
    x = _clip(num_frames)
    path, net = _official_file(tmp_path, tier, variant, num_frames, x)
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    model, variables = from_official(path)
    assert (model.tier, model.num_classes, model.num_frames, model.variant) == (
        tier, 174, num_frames, VARIANTS[variant])
    logits = model.apply(variables, jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy(), jnp.float32))
    diff = float(np.max(np.abs(np.asarray(logits) - expected)))
    print(f"{tier} {variant}: max |logit difference| {diff:.2e}, max |logit| "
          f"{np.abs(expected).max():.2f}")
    assert diff <= TOLERANCE
    # Every tensor was taken: the parameters the release counts are ours plus AQ's temperatures.
    temperatures = _leaf_count(variables.get("temperature", {}))
    assert _leaf_count(variables["params"]) + temperatures == _parameter_count(
        torch.load(path, weights_only=True)["model"])
    if variant == "rubiks3d":
        assert _leaf_count(variables["params"]) == OFFICIAL_COUNTS[(tier, variant)][1]


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, np.ndarray]:
    """A tiny rubiks3d state_dict (4 classes) as arrays, random weights."""
    net = ReferenceNet("tiny", 4, 2, "rubiks3d")
    randomize(net, _clip(2, 16, 16), seed=1)
    return {k: v.numpy() for k, v in net.state_dict().items()}


def test_official_keys_of_our_variables():
    cases = {("params", "stem", "kernel"): "backbone.conv1.weight",
             ("batch_stats", "bn_final", "var"): "backbone.bn_last.running_var",
             ("params", "classifier", "kernel"): "new_fc.weight",
             ("params", "layer3_block5", "conv1", "kernel"): "backbone.layer3.5.conv2.weight",
             ("params", "layer1_block0", "conv2", "kernel"): "backbone.layer1.0.conv3.weight",
             ("params", "layer0_block0", "shift", "shift"): "backbone.layer0.0.as3.rubiks3d.shift",
             ("params", "layer2_block1", "se", "expand", "kernel"):
                 "backbone.layer2.1.se.fc.2.weight"}
    for path, key in cases.items():
        assert official_key(path, aq=False) == key
    aq = {("params", "layer1_block0", "conv1", "kernel"): "backbone.layer1.0.conv2.1.weight",
          ("params", "layer1_block0", "attention_shift", "attention"):
              "backbone.layer1.0.conv2.0.weight",
          ("temperature", "layer1_block0", "attention_shift", "temperature"):
              "backbone.layer1.0.conv2.0.T",
          ("params", "layer1_block0", "shift", "shift"): "backbone.layer1.0.as3.shift"}
    for path, key in aq.items():
        assert official_key(path, aq=True) == key


def test_layouts(tiny_state_dict):
    """OIHW -> HWIO, Linear (out, in) -> (in, out), shift rows -> columns; BatchNorm weight, bias,
    running_mean, running_var -> scale, bias, mean, var."""
    sd = tiny_state_dict
    _, v = convert_state_dict(sd, "tiny", 4, 2)
    p, stats = v["params"], v["batch_stats"]
    np.testing.assert_array_equal(p["stem"]["kernel"],
                                  sd["backbone.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["layer1_block0"]["shortcut"]["kernel"][0, 0],
                                  sd["backbone.layer1.0.shortcut.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(p["classifier"]["kernel"], sd["new_fc.weight"].T)
    np.testing.assert_array_equal(p["classifier"]["bias"], sd["new_fc.bias"])
    np.testing.assert_array_equal(p["layer2_block1"]["shift"]["shift"],
                                  sd["backbone.layer2.1.as3.rubiks3d.shift"].T)
    for ours, theirs in (("scale", "weight"), ("bias", "bias")):
        np.testing.assert_array_equal(p["layer4_block2"]["bn2"][ours],
                                      sd[f"backbone.layer4.2.bn2.{theirs}"])
    for ours, theirs in (("mean", "running_mean"), ("var", "running_var")):
        np.testing.assert_array_equal(stats["bn_final"][ours], sd[f"backbone.bn_last.{theirs}"])
    assert set(v) == {"params", "batch_stats"}


def test_missing_key(tiny_state_dict):
    sd = dict(tiny_state_dict)
    del sd["backbone.layer1.0.bn1.running_var"]
    with pytest.raises(ValueError, match=r"key 'backbone\.layer1\.0\.bn1\.running_var' is missing"):
        convert_state_dict(sd, "tiny", 4, 2)


def test_num_batches_tracked_is_ignored_only_on_batch_norms(tiny_state_dict):
    sd = {k: v for k, v in tiny_state_dict.items() if not k.endswith("num_batches_tracked")}
    _, without = convert_state_dict(sd, "tiny", 4, 2)
    _, with_them = convert_state_dict(tiny_state_dict, "tiny", 4, 2)
    jax.tree_util.tree_map(np.testing.assert_array_equal, without, with_them)
    sd["backbone.conv1.num_batches_tracked"] = np.array(3)
    with pytest.raises(ValueError, match=r"unknown checkpoint key 'backbone\.conv1\.num_batches"):
        convert_state_dict(sd, "tiny", 4, 2)


def test_unknown_key(tiny_state_dict):
    sd = {**tiny_state_dict, "backbone.fc.weight": np.zeros((4, 432), np.float32)}
    with pytest.raises(ValueError, match=r"unknown checkpoint key 'backbone\.fc\.weight'"):
        convert_state_dict(sd, "tiny", 4, 2)
    # A rubiks3d file read as AQ: its 1x1 convolutions and shifts have other names.
    with pytest.raises(ValueError, match=r"unknown checkpoint key 'backbone\.layer0\.0\.conv2\."
                                         r"weight'.*34 unknown"):
        convert_state_dict(tiny_state_dict, "tiny", 4, 2, variant="rubiks3d-aq")


def test_wrong_shape(tiny_state_dict):
    key = "backbone.layer2.0.conv2.weight"
    sd = {**tiny_state_dict, key: tiny_state_dict[key].transpose(1, 0, 2, 3)}
    with pytest.raises(ValueError, match=rf"key '{key}' has shape \(54, 108, 1, 1\), the model "
                                         rf"needs \(108, 54, 1, 1\)"):
        convert_state_dict(sd, "tiny", 4, 2)
    key = "backbone.layer0.0.as3.rubiks3d.shift"
    sd = {**tiny_state_dict, key: tiny_state_dict[key][:2]}
    with pytest.raises(ValueError, match=rf"key '{key}' has shape \(2, 54\), the model needs "
                                         rf"\(3, 54\)"):
        convert_state_dict(sd, "tiny", 4, 2)
    with pytest.raises(ValueError, match=r"key 'new_fc\.bias' has shape \(4,\), the model needs "
                                         r"\(5,\)"):
        convert_state_dict(tiny_state_dict, "tiny", 5, 2)  # the classes the file records differ


def test_unsupported_tier_or_variant(tiny_state_dict):
    with pytest.raises(ValueError, match="unsupported variant 'rubiks3d-q'"):
        convert_state_dict(tiny_state_dict, "tiny", 4, 2, variant="rubiks3d-q")
    with pytest.raises(ValueError, match="unsupported tier 'huge'"):
        convert_state_dict(tiny_state_dict, "huge", 4, 2)


def test_file_fields(tmp_path, tiny_state_dict):
    path = str(tmp_path / "incomplete.pth.tar")
    model = {k: torch.from_numpy(v) for k, v in tiny_state_dict.items()}
    torch.save({"tier": "tiny", "num_classes": 4, "num_frames": 2, "model": model}, path)
    with pytest.raises(ValueError, match="field 'variant' is missing"):
        from_official(path)
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="expected a dict"):
        from_official(path)
