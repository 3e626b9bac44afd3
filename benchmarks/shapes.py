"""Parameter shapes of ResNet-50 and ViT-B/16, built from their definitions (no weights).

Each shape comes with whether the weight is scale-invariant in the real network (a
convolution followed by BatchNorm), so benchmarks can feed the gradients such weights get
and exercise AdamP's projection the way training does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamShape:
    """One parameter tensor of a network."""

    name: str
    shape: tuple[int, ...]
    scale_invariant: bool = False


def resnet50() -> list[ParamShape]:
    """ResNet-50 (He et al. 2016, torchvision layout): 161 tensors, 25,557,032 parameters."""
    shapes: list[ParamShape] = []

    def conv_bn(name: str, out_ch: int, in_ch: int, k: int) -> None:
        shapes.append(ParamShape(f"{name}.weight", (out_ch, in_ch, k, k), scale_invariant=True))
        shapes.append(ParamShape(f"{name}.bn.weight", (out_ch,)))
        shapes.append(ParamShape(f"{name}.bn.bias", (out_ch,)))

    conv_bn("conv1", 64, 3, 7)
    in_ch = 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)], start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            conv_bn(f"{prefix}.conv1", width, in_ch, 1)
            conv_bn(f"{prefix}.conv2", width, width, 3)
            conv_bn(f"{prefix}.conv3", width * 4, width, 1)
            if block == 0:
                conv_bn(f"{prefix}.downsample", width * 4, in_ch, 1)
            in_ch = width * 4
    shapes.append(ParamShape("fc.weight", (1000, 2048)))
    shapes.append(ParamShape("fc.bias", (1000,)))
    return shapes


def vit_b16() -> list[ParamShape]:
    """ViT-B/16 (Dosovitskiy et al. 2021, torchvision layout): 152 tensors, 86,567,656 params."""
    d, mlp, layers = 768, 3072, 12
    shapes = [
        ParamShape("class_token", (1, 1, d)),
        ParamShape("conv_proj.weight", (d, 3, 16, 16)),
        ParamShape("conv_proj.bias", (d,)),
        ParamShape("pos_embedding", (1, 197, d)),
    ]
    for i in range(layers):
        p = f"encoder.layer{i}"
        shapes += [
            ParamShape(f"{p}.ln_1.weight", (d,)),
            ParamShape(f"{p}.ln_1.bias", (d,)),
            ParamShape(f"{p}.attn.in_proj_weight", (3 * d, d)),
            ParamShape(f"{p}.attn.in_proj_bias", (3 * d,)),
            ParamShape(f"{p}.attn.out_proj.weight", (d, d)),
            ParamShape(f"{p}.attn.out_proj.bias", (d,)),
            ParamShape(f"{p}.ln_2.weight", (d,)),
            ParamShape(f"{p}.ln_2.bias", (d,)),
            ParamShape(f"{p}.mlp.0.weight", (mlp, d)),
            ParamShape(f"{p}.mlp.0.bias", (mlp,)),
            ParamShape(f"{p}.mlp.3.weight", (d, mlp)),
            ParamShape(f"{p}.mlp.3.bias", (d,)),
        ]
    shapes += [
        ParamShape("encoder.ln.weight", (d,)),
        ParamShape("encoder.ln.bias", (d,)),
        ParamShape("heads.head.weight", (1000, d)),
        ParamShape("heads.head.bias", (1000,)),
    ]
    return shapes


MODELS = {"resnet50": resnet50, "vit_b16": vit_b16}
