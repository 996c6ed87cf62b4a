"""DeepConvNet in PyTorch, layer for layer the network of deepnet.nets.DeepConvNet.

conv - relu - conv - relu - pool - conv - relu - conv(pad 2) - relu - pool -
conv - relu - conv - relu - pool - affine - relu - dropout - affine - dropout,
3x3 convolutions with stride 1, 2x2 max-pools with stride 2, dropout 0.5, He
initialisation (std sqrt(2 / fan_in), zero biases), trained with Adam (lr 0.001) on the
cross-entropy of the softmax.  Used by benches/compare.py as the PyTorch baseline.

One difference that costs nothing measurable: PyTorch's dropout is "inverted" (it scales
by 1/(1-p) while training), the book's scales by (1-p) at inference.
"""
import torch
from torch import nn

# (filters, pad) of the six convolutions; a max-pool follows every second one.
CONVS = [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]


def deep_conv_net(input_dim=(1, 28, 28), hidden_size=50, output_size=10, dtype=torch.float32, seed=0):
    """The network as an nn.Sequential in ``dtype``, He-initialised from ``seed``."""
    torch.manual_seed(seed)
    channels, height, width = input_dim
    layers = []
    for index, (filters, pad) in enumerate(CONVS, 1):
        layers += [nn.Conv2d(channels, filters, kernel_size=3, stride=1, padding=pad), nn.ReLU()]
        channels, height, width = filters, height + 2 * pad - 2, width + 2 * pad - 2
        if index % 2 == 0:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            height, width = height // 2, width // 2
    layers += [nn.Flatten(),
               nn.Linear(channels * height * width, hidden_size), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(hidden_size, output_size), nn.Dropout(0.5)]
    model = nn.Sequential(*layers)
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model.to(dtype)


def adam(model):
    """Adam with the book's settings (lr 0.001, betas 0.9/0.999, eps 1e-7)."""
    return torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)


def train_step(model, optimizer, loss_fn, x, t):
    """Forward, backward and one Adam update on the batch (x, t); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), t)
    loss.backward()
    optimizer.step()
    return loss
