"""The models train_resnet.py trains: torchvision's ResNet-18 / ResNet-50
(built with weights=None, so nothing is downloaded) and the CIFAR-style
ResNet-20 of He et al. 2016 (section 4.2), written here because torchvision
has none.

A 1-channel input (Fashion-MNIST) gets a 1-channel stem of the same shape
instead of copying the image into 3 channels: the same model otherwise, and
the first convolution costs a third."""
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity shortcut, or a
    1x1 projection where the shape changes (option B of the paper)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: a 3x3 stem of 16 channels, three
    stages of n blocks (16, 32, 64 channels; strides 1, 2, 2), global
    average pooling, one linear layer. n = 3 is ResNet-20 (0.27 M
    parameters)."""

    def __init__(self, n=3, in_channels=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build_model(name, in_channels, num_classes):
    """The model called `name` for inputs of `in_channels` channels. The
    caller seeds torch first: every rank builds the same initial weights."""
    if name == "resnet20":
        return ResNetCifar(3, in_channels, num_classes)
    if name not in ("resnet18", "resnet50"):
        raise ValueError(f"unknown model {name!r} (resnet18, resnet50, resnet20)")
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                old.padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
