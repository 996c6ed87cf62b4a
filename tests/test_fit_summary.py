"""deepnet.fit (training in one call) and model.summary() against independent facts: the
Trainer it wraps, the cosine formula, hand-counted parameters and multiply-adds."""

import math
import re

import numpy as np
import pytest

import deepnet
from deepnet import recipes
from deepnet.datasets import load_mnist
from deepnet.models import describe, summary
from deepnet.nets import DeepConvNet
from deepnet.trainer import Trainer
from support import MNIST_DIR


@pytest.fixture(scope="module")
def mnist():
    (x_train, t_train), _ = load_mnist(root=MNIST_DIR, flatten=False)
    return x_train[:600], t_train[:600]


def small_net(seed):
    return DeepConvNet(seed=seed)


def test_fit_trains_exactly_as_the_trainer_it_wraps(mnist):
    x, t = mnist
    by_fit, by_trainer = small_net(0), small_net(0)
    history = deepnet.fit(by_fit, x, t, epochs=2, batch_size=100, lr=0.002, seed=3, verbose=False)
    Trainer(
        by_trainer, x, t, epochs=2, mini_batch_size=100, optimizer_param={"lr": 0.002}, seed=3, verbose=False
    ).train()
    for name, value in by_trainer.params.items():
        np.testing.assert_array_equal(by_fit.params[name], value)
    assert len(history["loss"]) == 2 and len(history["seconds"]) == 2
    steps = history["trainer"]["train_loss_list"]
    assert history["loss"] == pytest.approx([np.mean(steps[:6]), np.mean(steps[6:])])


def test_fit_holds_out_a_stratified_validation_split(mnist):
    x, t = mnist
    history = deepnet.fit(small_net(1), x, t, epochs=1, validation_split=0.25, seed=0, verbose=False)
    assert history["trainer"]["images_evaluated_per_epoch"] == {"val": 150}
    assert len(history["val_accuracy"]) == 1 and 0 <= history["val_accuracy"][0] <= 1


def test_fit_schedules_in_epochs(mnist):
    """A cosine schedule given only in epochs: 600 images in batches of 100 are 6 steps an
    epoch, and the rate of step s of 12 is lr * (1 + cos(pi * s / 12)) / 2; the history
    holds each epoch's last step's (s = 5 and 11)."""
    x, t = mnist
    history = deepnet.fit(
        small_net(2), x, t, epochs=2, lr=0.004, lr_schedule="cosine", augment="rotation=10", seed=0, verbose=False
    )
    assert history["lr"] == pytest.approx([0.004 * (1 + math.cos(math.pi * s / 12)) / 2 for s in (5, 11)])


def test_fit_refuses_a_bad_split(mnist):
    x, t = mnist
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\), got 1.5"):
        deepnet.fit(small_net(0), x, t, validation_split=1.5)
    with pytest.raises(ValueError, match="holds out 0"):
        deepnet.fit(small_net(0), x[:3], t[:3], validation_split=0.1)


def test_the_progress_bar_shows_in_notebooks_too():
    import tqdm.auto

    from deepnet.training import reporting

    assert reporting.tqdm is tqdm.auto.tqdm


def counted(row):
    return [int(n.replace(",", "")) for n in row.split()[-2:]]


@pytest.mark.parametrize("name", ["deepconvnet", "resnet", "googlenet", "deepconvnet-bn"])
def test_summary_rows_add_up_to_describe(name):
    model = recipes.MODEL_NAMES[name]("float32", 0)
    table = summary(model).splitlines()
    rows, total = table[2:-2], table[-1]
    assert len(rows) == len(model.layers)
    described = describe(model)
    assert counted(total) == [described["parameters"], described["multiply_adds"]]
    assert [sum(column) for column in zip(*map(counted, rows))] == counted(total)
    shape = (1, 1, 28, 28)
    for row, layer in zip(rows, model.layers):
        shape = layer.output_shape(shape)
        assert "(N, " + ", ".join(map(str, shape[1:])) + ")" in row


def test_summary_counts_by_hand(capsys):
    DeepConvNet(seed=0).summary()
    printed = capsys.readouterr().out
    first = re.search(r"^0 Convolution\+ReLU\s+\(N, 16, 28, 28\)\s+(\S+)\s+(\S+)$", printed, re.M)
    # 16 filters of 1x3x3 plus 16 biases; 28 * 28 outputs per filter, 9 multiply-adds each
    assert first.groups() == (f"{16 * 9 + 16:,}", f"{28 * 28 * 16 * 9:,}")
    with pytest.raises(ValueError, match="Affine"):
        summary(DeepConvNet(seed=0), (1, 8, 8))


def test_summary_counts_inside_nested_containers():
    """A Residual whose body is a plain container Sequential: its convolutions' work counts
    (3x3, 4 -> 4 channels, pad 1 on 8x8: 8 * 8 * 4 * 4 * 9 multiply-adds each)."""
    from deepnet.models import Sequential
    from deepnet.nn import Convolution, Residual, containers

    def conv():
        return Convolution(np.ones((4, 4, 3, 3), np.float32), np.zeros(4, np.float32), pad=1)

    model = Sequential(Residual(containers.Sequential(conv(), conv())))
    assert describe(model, (1, 4, 8, 8))["multiply_adds"] == 2 * 8 * 8 * 4 * 4 * 9
    assert counted(summary(model, (4, 8, 8)).splitlines()[-1]) == [2 * (4 * 4 * 9 + 4), 2 * 8 * 8 * 4 * 4 * 9]
