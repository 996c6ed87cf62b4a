"""Reviewer's tests (branch review): trainer features of issue 11 that had no test.

Each test is independent of the others; the ones that fail on main at dd15e03 are marked
in the reviewer's report.
"""
import numpy as np
import pytest

from deepnet.nets import DeepConvNet
from deepnet.schedules import Schedule
from deepnet.trainer import Trainer, WeightAverage
from test_trainer import conv, interrupt_after, random_data


def tiny_bn_net(seed):
    return DeepConvNet(input_dim=(1, 12, 12), conv_param_1=conv(2), conv_param_2=conv(2), conv_param_3=conv(3),
                       conv_param_4=conv(3, pad=2), conv_param_5=conv(3), conv_param_6=conv(3),
                       hidden_size=8, output_size=3, seed=seed, batch_norm=True)


def full_trainer(network, x, t, checkpoint=None, resume=False, seed=7):
    x_val, t_val = random_data(40, seed=3)
    x_test, t_test = random_data(30, seed=1)
    steps = -(-len(x) // 64)
    hooks = [Schedule("cosine", 0.01, steps, 3, warmup=0.5, min_lr=1e-4), WeightAverage(0.9)]
    from deepnet.augment import Augment
    augment = Augment(rotation=10, shift=1, elastic_alpha=8, elastic_sigma=3)
    return Trainer(network, x, t, x_test, t_test, epochs=3, mini_batch_size=64, seed=seed, verbose=False,
                   optimizer_param={"lr": 0.01}, x_val=x_val, t_val=t_val, select="best-val", hooks=hooks,
                   batch_transform=augment, checkpoint_path=checkpoint, resume=resume)


def test_resume_with_augmentation_validation_cosine_warmup_ema_and_best_val_is_bit_exact(tmp_path):
    x, t = random_data(200)  # 4 steps per epoch
    whole = full_trainer(tiny_bn_net(0), x, t)
    whole_test = whole.train()

    checkpoint = tmp_path / "c.npz"
    first = full_trainer(tiny_bn_net(0), x, t, checkpoint)
    interrupt_after(first, steps=4 + 3)  # inside the second epoch
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = full_trainer(tiny_bn_net(99), x, t, checkpoint, resume=True, seed=123)
    assert resumed.epoch == 1
    resumed_test = resumed.train()

    assert resumed.train_loss_list == whole.train_loss_list
    assert resumed.val_acc_list == whole.val_acc_list
    assert resumed.lr_list == whole.lr_list
    assert resumed.best[:2] == whole.best[:2]
    assert resumed_test == whole_test
    for name, value in whole.network.params.items():  # the kept (best-val, averaged) weights
        np.testing.assert_array_equal(resumed.network.params[name], value, err_msg=name)
    for name, value in whole.network.buffers.items():
        np.testing.assert_array_equal(resumed.network.buffers[name], value, err_msg=name)
    ema_whole, ema_resumed = whole.hooks[1].average, resumed.hooks[1].average
    for name in ema_whole:
        np.testing.assert_array_equal(ema_resumed[name], ema_whole[name], err_msg=name)


def test_weight_average_is_the_documented_moving_average_and_is_what_is_kept():
    x, t = random_data(150)
    network = tiny_bn_net(0)
    seen = []

    class Record:  # runs after the average's own after_step: the raw weights of each step
        def after_step(self, trainer):
            seen.append({**{k: v.astype(np.float64) for k, v in trainer.network.params.items()},
                         **{"buffers/" + k: v.astype(np.float64) for k, v in trainer.network.buffers.items()}})
    average = WeightAverage(0.95)
    trainer = Trainer(network, x, t, epochs=2, mini_batch_size=50, seed=0, verbose=False,
                      hooks=[average, Record()])
    trainer.train()
    expected = dict(seen[0])
    for steps, weights in enumerate(seen[1:], 1):
        d = min(0.95, (1 + steps) / (10 + steps))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    for name, value in network.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name, value in network.buffers.items():
        np.testing.assert_allclose(value, expected["buffers/" + name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_best_val_keeps_the_weights_of_the_epoch_with_the_best_validation_accuracy():
    x, t = random_data(150)
    x_val, t_val = random_data(60, seed=5)
    network = tiny_bn_net(0)
    snapshots = []

    class Record:
        def after_epoch(self, trainer):
            snapshots.append({k: v.copy() for k, v in trainer.network.params.items()})
    trainer = Trainer(network, x, t, epochs=4, mini_batch_size=50, seed=0, verbose=False,
                      optimizer_param={"lr": 0.05}, x_val=x_val, t_val=t_val, select="best-val", hooks=[Record()])
    trainer.train()
    best = int(np.argmax(trainer.val_acc_list))  # the first of equal maxima
    assert trainer.best[0] == best + 1 and trainer.best[1] == trainer.val_acc_list[best]
    for name, value in network.params.items():
        np.testing.assert_array_equal(value, snapshots[best][name], err_msg=name)


def test_stratified_split_keeps_each_class_share_and_is_seeded():
    from deepnet.datasets import stratified_split
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    train, val = stratified_split(labels, 20, seed=3)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 6, 3, 1]
    again, val_again = stratified_split(labels, 20, seed=3)
    assert np.array_equal(val, val_again) and not np.array_equal(val, stratified_split(labels, 20, seed=4)[1])
