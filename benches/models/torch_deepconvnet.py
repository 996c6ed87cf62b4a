"""deepnet's nets in PyTorch, layer for layer: DeepConvNet (and its BN variant) and the small ResNet.

conv - relu - conv - relu - pool - conv - relu - conv(pad 2) - relu - pool -
conv - relu - conv - relu - pool - affine - relu - dropout - affine - dropout,
3x3 convolutions with stride 1, 2x2 max-pools with stride 2, dropout 0.5, He
initialisation (std sqrt(2 / fan_in), zero biases), trained with Adam (lr 0.001) on the
cross-entropy of the softmax.  ``batch_norm=True`` puts a BatchNorm after every convolution
and the hidden affine layer (deepnet.nets.DeepConvNet(batch_norm=True)); ``resnet()`` is
deepnet.nets.ResNet().  Used by benches/models/compare.py as the PyTorch baseline;
``from_deepnet`` copies a trained deepnet DeepConvNet into the mirror (benches/models/peers.py).

One difference that costs nothing measurable: PyTorch's dropout is "inverted" (it scales
by 1/(1-p) while training), the book's scales by (1-p) at inference.
"""

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


MODELS = {
    "deepconvnet": deep_conv_net,
    "deepconvnet-bn": lambda **kw: deep_conv_net(batch_norm=True, **kw),
    "resnet": resnet,
}  # the names of deepnet.recipes.MODEL_NAMES


def from_deepnet(net):
    """The float32 mirror of deepnet's DeepConvNet ``net`` (no BN) with its parameters, in eval mode.

    The book's inference-time dropout scales by 0.5 twice (the hidden units, then the scores);
    both scales go into the last linear layer, so the mirror's scores equal ``net.predict``'s.
    """
    params = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in net.params.items()}
    expected = {f"{kind}{i}" for i in range(1, 9) for kind in "Wb"}
    if set(params) != expected:
        raise ValueError(f"from_deepnet: expected a DeepConvNet without BN (W1..W8, b1..b8), got {sorted(params)}")
    model = deep_conv_net(dtype=torch.float32, seed=0)
    layers = [layer for layer in model if isinstance(layer, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for index, layer in enumerate(layers, 1):
            weight, bias = params[f"W{index}"], params[f"b{index}"]
            if isinstance(layer, nn.Linear):
                weight = weight.T  # deepnet's affine computes x @ W
            if index == len(layers):
                weight, bias = 0.25 * weight, 0.5 * bias
            if layer.weight.shape != weight.shape:
                raise ValueError(
                    f"from_deepnet: W{index} has shape {tuple(weight.shape)}, expected {tuple(layer.weight.shape)}"
                )
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return model.eval()


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
