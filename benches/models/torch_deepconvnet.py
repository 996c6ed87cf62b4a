"""deepnet's nets in PyTorch, layer for layer: DeepConvNet (and its BN variant) and the small ResNet.

conv - relu - conv - relu - pool - conv - relu - conv(pad 2) - relu - pool -
conv - relu - conv - relu - pool - affine - relu - dropout - affine - dropout,
3x3 convolutions with stride 1, 2x2 max-pools with stride 2, dropout 0.5, He
initialisation (std sqrt(2 / fan_in), zero biases), trained with Adam (lr 0.001) on the
cross-entropy of the softmax.  ``batch_norm=True`` puts a BatchNorm after every convolution
and the hidden affine layer (deepnet.nets.DeepConvNet(batch_norm=True)); ``resnet()`` is
deepnet.nets.ResNet().  Used by benches/models/compare.py as the PyTorch baseline;
``from_deepnet`` copies a deepnet model of one of these names (its weights and BN statistics) into
its mirror (benches/models/peers.py, latency.py).

One difference that costs nothing measurable: PyTorch's dropout is "inverted" (it scales
by 1/(1-p) while training), the book's scales by (1-p) at inference.
"""

import numpy as np
import torch
from torch import nn

# (filters, pad) of the six convolutions; a max-pool follows every second one.
CONVS = [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]


def deep_conv_net(input_dim=(1, 28, 28), hidden_size=50, output_size=10, dtype=torch.float32, seed=0, batch_norm=False):
    """The network as an nn.Sequential in ``dtype``, He-initialised from ``seed``."""
    torch.manual_seed(seed)
    channels, height, width = input_dim
    layers = []
    for index, (filters, pad) in enumerate(CONVS, 1):
        layers.append(nn.Conv2d(channels, filters, kernel_size=3, stride=1, padding=pad))
        layers += [nn.BatchNorm2d(filters)] if batch_norm else []
        layers.append(nn.ReLU())
        channels, height, width = filters, height + 2 * pad - 2, width + 2 * pad - 2
        if index % 2 == 0:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            height, width = height // 2, width // 2
    layers += [nn.Flatten(), nn.Linear(channels * height * width, hidden_size)]
    layers += [nn.BatchNorm1d(hidden_size)] if batch_norm else []
    layers += [nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden_size, output_size), nn.Dropout(0.5)]
    return _he_initialised(nn.Sequential(*layers)).to(dtype)


class BasicBlock(nn.Module):
    """conv3x3 - BN - relu - conv3x3 - BN, plus the shortcut (identity, or a strided 1x1
    convolution with BN where the shape changes), then relu: deepnet.nets.basic_block."""

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, 0), nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet(input_channels=1, widths=(16, 32, 64), blocks=(2, 2, 2), output_size=10, dtype=torch.float32, seed=0):
    """deepnet.nets.ResNet(): a 3x3 stem with BN, stages of basic blocks (stride 2 from the
    second stage on), global average pooling, one affine layer."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(input_channels, widths[0], 3, 1, 1), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            layers.append(BasicBlock(channels, width, 2 if stage > 0 and block == 0 else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, output_size)]
    return _he_initialised(nn.Sequential(*layers)).to(dtype)


class Inception(nn.Module):
    """deepnet.models.googlenet.inception: 1x1; 1x1 - 3x3; 1x1 - 5x5; 3x3 max-pool (stride 1,
    pad 1) - 1x1, each convolution with its ReLU, concatenated along the channels."""

    def __init__(self, in_channels, ones, threes, fives, projection):
        super().__init__()

        def conv(c_in, c_out, size):
            return [nn.Conv2d(c_in, c_out, size, 1, size // 2), nn.ReLU()]

        self.ones = nn.Sequential(*conv(in_channels, ones, 1))
        self.threes = nn.Sequential(*conv(in_channels, threes[0], 1), *conv(threes[0], threes[1], 3))
        self.fives = nn.Sequential(*conv(in_channels, fives[0], 1), *conv(fives[0], fives[1], 5))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv(in_channels, projection, 1))

    def forward(self, x):
        return torch.cat([self.ones(x), self.threes(x), self.fives(x), self.pool(x)], dim=1)


def googlenet(input_channels=1, output_size=10, dtype=torch.float32, seed=0):
    """deepnet.models.GoogLeNet(): a 3x3 stem and a pooling, Inception blocks in two stages
    with a pooling between them, global average pooling, one affine layer."""
    from deepnet.models import GoogLeNet

    torch.manual_seed(seed)
    stem = 32
    layers = [nn.Conv2d(input_channels, stem, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2)]
    channels = stem
    for stage, blocks in enumerate(GoogLeNet.STAGES):
        if stage:
            layers.append(nn.MaxPool2d(2, 2))
        for ones, threes, fives, projection in blocks:
            layers.append(Inception(channels, ones, threes, fives, projection))
            channels = ones + threes[1] + fives[1] + projection
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, output_size)]
    return _he_initialised(nn.Sequential(*layers)).to(dtype)


MODELS = {
    "deepconvnet": deep_conv_net,
    "deepconvnet-bn": lambda **kw: deep_conv_net(batch_norm=True, **kw),
    "resnet": resnet,
    "googlenet": googlenet,
}  # the names of deepnet.recipes.MODEL_NAMES


def from_deepnet(net, model="deepconvnet"):
    """The float32 mirror (MODELS[model]) of deepnet's ``net``, a model of that name, with its parameters
    and BN running statistics, in eval mode: its scores equal ``net.predict(x, train=False)``'s.

    The layers pair up in order (convolutions, affine layers, BNs, ResNet's body before its
    shortcut as in both builders); BN takes deepnet's epsilon.  DeepConvNet's inference-time dropout
    scales by 0.5 twice (the hidden units, then the scores); both scales go into the last linear layer.
    """
    from deepnet.layers import Affine, BatchNormalization, Convolution, Dropout

    if model not in MODELS:
        raise ValueError(f"from_deepnet: model must be one of {', '.join(MODELS)}, got {model!r}")
    mirror = MODELS[model](dtype=torch.float32, seed=0)
    mine = [
        layer for layer in mirror.modules() if isinstance(layer, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))
    ]
    theirs, kept = [], []  # kept: (1 - ratio) of each dropout, which inference scales by
    for _, layer in net.named_layers():
        if type(layer) in (Convolution, Affine, BatchNormalization):
            theirs.append(layer)
        if isinstance(layer, Dropout):
            kept.append(1 - layer.dropout_ratio)
    kinds = [("bn" if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) else "weights") for layer in mine]
    their_kinds = [("bn" if isinstance(layer, BatchNormalization) else "weights") for layer in theirs]
    if kinds != their_kinds:
        raise ValueError(
            f"from_deepnet: expected deepnet's {model} ({kinds.count('weights')} convolution/affine layers, "
            f"{kinds.count('bn')} BN), got {their_kinds.count('weights')} and {their_kinds.count('bn')}"
        )

    def tensor(value):
        return torch.as_tensor(np.asarray(value, dtype=np.float32))

    last = max(i for i, kind in enumerate(kinds) if kind == "weights")
    with torch.no_grad():
        for index, (layer, source) in enumerate(zip(mine, theirs)):
            if kinds[index] == "bn":
                layer.eps = source.EPS
                for name, value in (
                    ("weight", source.gamma),
                    ("bias", source.beta),
                    ("running_mean", source.running_mean),
                    ("running_var", source.running_var),
                ):
                    getattr(layer, name).copy_(tensor(value))
                continue
            weight, bias = tensor(source.W), tensor(source.b)
            if isinstance(layer, nn.Linear):
                weight = weight.T  # deepnet's affine computes x @ W
            if index == last and len(kept) == 2:  # DeepConvNet: dropout before and after the last affine
                weight, bias = kept[0] * kept[1] * weight, kept[1] * bias
            if layer.weight.shape != weight.shape:
                raise ValueError(
                    f"from_deepnet: layer {index + 1} has weights of shape {tuple(weight.shape)}, "
                    f"expected {tuple(layer.weight.shape)}"
                )
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return mirror.eval()


def _he_initialised(model):
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def adam(model):
    """Adam with the book's settings (lr 0.001, betas 0.9/0.999, eps 1e-7)."""
    return torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)


def train_step(model, optimizer, loss_fn, x, t, autocast=None):
    """Forward, backward and one Adam update on the batch (x, t); returns the loss.  ``autocast``
    (a torch dtype such as torch.bfloat16): the forward pass and the loss run under CPU autocast
    to it; the backward pass follows the forward's dtypes, the parameters stay as they are."""
    optimizer.zero_grad(set_to_none=True)
    if autocast is None:
        loss = loss_fn(model(x), t)
    else:
        with torch.autocast("cpu", dtype=autocast):
            loss = loss_fn(model(x), t)
    loss.backward()
    optimizer.step()
    return loss
