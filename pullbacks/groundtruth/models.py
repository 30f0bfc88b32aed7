"""Small networks of the paper's families for the generated task, built from torchvision's own
classes so that what matters for the rules is kept: ResNet's reused in-place ReLU and its
stem max pool (``ResNet``, ``Bottleneck``), VGG-BN's conv/BN/ReLU stacks and max pools
(``make_layers``), DenseNet's functional ReLU and its stem max pool (``DenseNet``), and a
ViT's GELU, layer norms and attention (``VisionTransformer``). Every one takes 64×64 images
in [-1, 1] and returns 10 logits.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import DenseNet, VisionTransformer
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers

from .task import CLASSES

NUM_CLASSES = len(CLASSES)


def resnet() -> nn.Module:
    """A bottleneck ResNet (one block per stage, widths 8-64 → 32-256 channels), the stem max pool kept."""
    m = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=NUM_CLASSES)
    m.inplanes = 16
    m.conv1, m.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
    m.layer1 = m._make_layer(Bottleneck, 8, 1)
    m.layer2 = m._make_layer(Bottleneck, 16, 1, stride=2)
    m.layer3 = m._make_layer(Bottleneck, 32, 1, stride=2)
    m.layer4 = m._make_layer(Bottleneck, 64, 1, stride=2)
    m.fc = nn.Linear(64 * Bottleneck.expansion, NUM_CLASSES)
    return m


def vgg() -> nn.Module:
    """A VGG-BN layout (``make_layers(batch_norm=True)``, four max pools) with a small classifier."""
    m = VGG(make_layers([16, "M", 32, "M", 64, 64, "M", 128, 128, "M"], batch_norm=True), num_classes=NUM_CLASSES)
    m.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    m.classifier = nn.Sequential(nn.Linear(128 * 4, 128), nn.ReLU(True), nn.Dropout(0.3), nn.Linear(128, NUM_CLASSES))
    return m


def densenet() -> nn.Module:
    """torchvision's ``DenseNet`` with growth 16 and three blocks of three layers; a 3×3 stem
    convolution instead of 7×7 (for 64-px images; its stride 2 and its max pool kept)."""
    m = DenseNet(growth_rate=16, block_config=(3, 3, 3), num_init_features=24, bn_size=4, num_classes=NUM_CLASSES)
    m.features.conv0 = nn.Conv2d(3, 24, 3, 2, 1, bias=False)
    return m


def vit() -> nn.Module:
    """torchvision's ``VisionTransformer`` (4 layers of width 96, 4 heads, 64 tokens of 8×8 px and a
    class token) whose patch embedding is a convolutional stem: three stride-2 and one stride-1
    3×3 conv/BN/ReLU layers and a 1×1 projection (Xiao et al. 2021, "Early convolutions help
    transformers see better"). With the plain 8-px patch embedding the same budget reached 25 %
    held-out accuracy."""
    m = VisionTransformer(
        image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=96, mlp_dim=192, num_classes=NUM_CLASSES
    )
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, 32, 2), (32, 64, 2), (64, 96, 2), (96, 96, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    m.conv_proj = nn.Sequential(*layers, nn.Conv2d(96, 96, 1))
    return m


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"resnet": resnet, "vgg": vgg, "densenet": densenet, "vit": vit}
