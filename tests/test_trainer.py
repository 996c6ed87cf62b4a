"""Trainer: shuffled epochs, history, checkpoints and bit-exact resume, and that it learns."""

import json
import math
import re

import numpy as np
import pytest

from deepnet.datasets import load_mnist
from deepnet.nets import DeepConvNet
from deepnet.trainer import Trainer
from support import MNIST_DIR


def conv(filters, pad=1):
    return {"filter_num": filters, "filter_size": 3, "pad": pad, "stride": 1}


def tiny_deep_convnet(seed=0, input_size=12, filters=(2, 3, 4), hidden_size=8, output_size=3):
    """DeepConvNet's architecture with few filters (and small images by default): fast."""
    f1, f2, f3 = filters
    return DeepConvNet(
        input_dim=(1, input_size, input_size),
        conv_param_1=conv(f1),
        conv_param_2=conv(f1),
        conv_param_3=conv(f2),
        conv_param_4=conv(f2, pad=2),
        conv_param_5=conv(f3),
        conv_param_6=conv(f3),
        hidden_size=hidden_size,
        output_size=output_size,
        seed=seed,
    )


def random_data(n, seed=0, size=12, classes=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, size, size), dtype=np.float32), rng.integers(0, classes, n)


def make_trainer(network, x, t, **options):
    x_test, t_test = random_data(30, seed=1)
    settings = dict(epochs=2, mini_batch_size=64, seed=7, verbose=False)
    settings.update(options)
    return Trainer(network, x, t, x_test, t_test, **settings)


def interrupt_after(trainer, steps):
    """Make ``trainer`` raise KeyboardInterrupt in place of its step number ``steps + 1``."""
    real_step, done = trainer.train_step, []

    def step(x_batch, t_batch):
        if len(done) == steps:
            raise KeyboardInterrupt
        done.append(1)
        return real_step(x_batch, t_batch)

    trainer.train_step = step


# -- epochs --------------------------------------------------------------------------------


def test_each_epoch_visits_every_sample_once_in_a_new_order():
    x, t = random_data(150)
    x[:, 0, 0, 0] = np.arange(150)  # tag each image with its index
    trainer = make_trainer(tiny_deep_convnet(), x, t, epochs=2)
    seen = []
    real_step = trainer.train_step
    trainer.train_step = lambda xb, tb: seen.append(xb[:, 0, 0, 0].astype(int)) or real_step(xb, tb)
    trainer.train()

    assert [len(batch) for batch in seen] == [64, 64, 22] * 2  # the partial batch is used
    first, second = np.concatenate(seen[:3]), np.concatenate(seen[3:])
    assert sorted(first) == sorted(second) == list(range(150))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(150))
    assert len(trainer.train_loss_list) == 6


def test_same_seed_gives_the_same_run():
    x, t = random_data(100)
    runs = [make_trainer(tiny_deep_convnet(seed=3), x, t, seed=5) for _ in range(2)]
    for trainer in runs:
        trainer.train()
    assert runs[0].train_loss_list == runs[1].train_loss_list
    for name, value in runs[0].network.params.items():
        np.testing.assert_array_equal(runs[1].network.params[name], value)


def test_train_returns_accuracy_on_the_whole_test_set():
    x, t = random_data(100)
    x_test, t_test = random_data(57, seed=2)
    network = tiny_deep_convnet()
    trainer = Trainer(
        network,
        x,
        t,
        x_test,
        t_test,
        epochs=1,
        mini_batch_size=50,
        evaluate_sample_num_per_epoch=10,
        verbose=False,
        seed=0,
    )
    final = trainer.train()
    assert final == network.accuracy(x_test, t_test)
    assert trainer.test_acc_list == [network.accuracy(x_test[:10], t_test[:10])]
    assert trainer.train_acc_list == [network.accuracy(x[:10], t[:10])]


def test_verbose_prints_epochs_and_summary_and_quiet_prints_nothing(capsys):
    x, t = random_data(80)
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, verbose=False).train()
    assert capsys.readouterr() == ("", "")
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, verbose=True).train()
    out = capsys.readouterr().out
    assert "epoch 1/1: train acc" in out and "test acc:" in out


# -- history and checkpoints ---------------------------------------------------------------


def test_history_is_written_as_json_after_each_epoch(tmp_path):
    x, t = random_data(100)
    path = tmp_path / "history.json"
    trainer = make_trainer(tiny_deep_convnet(), x, t, epochs=2, mini_batch_size=40, history_path=path)
    trainer.train()
    history = json.loads(path.read_text())
    assert history["epochs_done"] == 2
    assert history["train_loss_list"] == trainer.train_loss_list
    assert len(history["train_loss_list"]) == 2 * math.ceil(100 / 40)
    assert history["train_acc_list"] == trainer.train_acc_list
    assert history["test_acc_list"] == trainer.test_acc_list
    assert len(history["test_acc_list"]) == len(history["epoch_times"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # no temporary files left


@pytest.mark.parametrize("how", ["resume option", "resume method"])
def test_interrupted_then_resumed_run_ends_with_exactly_the_same_parameters(tmp_path, how):
    x, t = random_data(200)  # 4 batches of 64, 64, 64, 8 per epoch
    uninterrupted = make_trainer(tiny_deep_convnet(seed=0), x, t, epochs=3)
    uninterrupted.train()

    checkpoint = tmp_path / "run.ckpt.npz"
    interrupted = make_trainer(tiny_deep_convnet(seed=0), x, t, epochs=3, checkpoint_path=checkpoint)
    interrupt_after(interrupted, steps=4 + 2)  # in the middle of the second epoch
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()

    # Another initialisation and trainer seed: everything must come from the checkpoint.
    network = tiny_deep_convnet(seed=99)
    if how == "resume option":
        resumed = make_trainer(network, x, t, epochs=3, seed=123, checkpoint_path=checkpoint, resume=True)
    else:
        resumed = make_trainer(network, x, t, epochs=3, seed=123).resume(checkpoint)
    assert resumed.epoch == 1
    resumed.train()

    for name, value in uninterrupted.network.params.items():
        np.testing.assert_array_equal(network.params[name], value, err_msg=name)
    assert resumed.train_loss_list == uninterrupted.train_loss_list
    assert resumed.test_acc_list == uninterrupted.test_acc_list
    assert resumed.optimizer.iter == uninterrupted.optimizer.iter == 12


def test_resume_option_without_a_checkpoint_file_starts_afresh(tmp_path):
    x, t = random_data(64)
    trainer = make_trainer(tiny_deep_convnet(), x, t, epochs=1, checkpoint_path=tmp_path / "new.npz", resume=True)
    assert trainer.epoch == 0
    trainer.train()
    assert (tmp_path / "new.npz").is_file()


def test_resume_refuses_a_checkpoint_of_another_batch_size(tmp_path):
    x, t = random_data(64)
    checkpoint = tmp_path / "c.npz"
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, checkpoint_path=checkpoint).train()
    other = make_trainer(tiny_deep_convnet(), x, t, mini_batch_size=32)
    with pytest.raises(ValueError, match="batch_size: saved 64, now 32"):
        other.resume(checkpoint)


# -- learning ------------------------------------------------------------------------------


def test_short_training_run_on_mnist_learns():
    data = MNIST_DIR
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, root=data)
    network = tiny_deep_convnet(seed=0, input_size=28, filters=(4, 8, 8), hidden_size=50, output_size=10)
    trainer = Trainer(
        network,
        x_train[:600],
        t_train[:600],
        x_test[:300],
        t_test[:300],
        epochs=3,
        mini_batch_size=20,
        optimizer_param={"lr": 0.005},
        evaluate_sample_num_per_epoch=200,
        verbose=False,
        seed=0,
    )
    accuracy = trainer.train()
    losses = trainer.train_loss_list
    quarter = len(losses) // 4
    assert np.mean(losses[-quarter:]) < np.mean(losses[:quarter]) - 0.2
    assert accuracy > 0.4  # chance is 0.1


# -- edge cases ---------------------------------------------------------------------------

from deepnet.schedules import Schedule  # noqa: E402
from deepnet.trainer import Callback, WeightAverage  # noqa: E402


def tiny_bn_net(seed):
    return DeepConvNet(
        input_dim=(1, 12, 12),
        conv_param_1=conv(2),
        conv_param_2=conv(2),
        conv_param_3=conv(3),
        conv_param_4=conv(3, pad=2),
        conv_param_5=conv(3),
        conv_param_6=conv(3),
        hidden_size=8,
        output_size=3,
        seed=seed,
        batch_norm=True,
    )


def full_trainer(network, x, t, checkpoint=None, resume=False, seed=7):
    x_val, t_val = random_data(40, seed=3)
    x_test, t_test = random_data(30, seed=1)
    steps = -(-len(x) // 64)
    hooks = [Schedule("cosine", 0.01, steps, 3, warmup=0.5, min_lr=1e-4), WeightAverage(0.9)]
    from deepnet.augment import Augment

    augment = Augment(rotation=10, shift=1, elastic_alpha=8, elastic_sigma=3)
    return Trainer(
        network,
        x,
        t,
        x_test,
        t_test,
        epochs=3,
        mini_batch_size=64,
        seed=seed,
        verbose=False,
        optimizer_param={"lr": 0.01},
        x_val=x_val,
        t_val=t_val,
        select="best-val",
        hooks=hooks,
        batch_transform=augment,
        checkpoint_path=checkpoint,
        resume=resume,
    )


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

    class Record(Callback):  # runs after the average's own on_step_end: the raw weights of each step
        def on_step_end(self, trainer):
            seen.append(
                {
                    **{k: v.astype(np.float64) for k, v in trainer.network.params.items()},
                    **{"buffers/" + k: v.astype(np.float64) for k, v in trainer.network.buffers.items()},
                }
            )

    average = WeightAverage(0.95)
    trainer = Trainer(network, x, t, epochs=2, mini_batch_size=50, seed=0, verbose=False, hooks=[average, Record()])
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

    class Record(Callback):
        def on_epoch_end(self, trainer):
            snapshots.append({k: v.copy() for k, v in trainer.network.params.items()})

    trainer = Trainer(
        network,
        x,
        t,
        epochs=4,
        mini_batch_size=50,
        seed=0,
        verbose=False,
        optimizer_param={"lr": 0.05},
        x_val=x_val,
        t_val=t_val,
        select="best-val",
        hooks=[Record()],
    )
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


# -- checkpoint values are validated on resume (hardening round 3, row 8) --------------------


def _tampered_checkpoint(tmp_path, change, **options):
    """A checkpoint after 1 epoch of 2 (made with ``options``), with ``change(entries)``
    applied to its entries (a dict name -> array) before it is written back."""
    x, t = random_data(64)
    path = tmp_path / "c.npz"
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, checkpoint_path=path, **options).train()
    with np.load(path) as f:
        entries = {name: f[name] for name in f.files}
    change(entries)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    return x, t, path


def _setter(name, value):
    def change(entries):
        entries[name] = value(entries[name]) if callable(value) else value

    return change


def _v_name(entries):
    return next(name for name in entries if name.startswith("optimizer/v/"))


def _negative_v(entries):
    name = _v_name(entries)
    entries[name] = -np.ones_like(entries[name])


def _int64_m(entries):
    name = next(name for name in entries if name.startswith("optimizer/m/"))
    entries[name] = entries[name].astype(np.int64)


def _nan_v(entries):
    name = _v_name(entries)
    entries[name] = np.full_like(entries[name], np.nan)


def _v_of_another_shape(entries):
    name = _v_name(entries)
    entries[name] = np.zeros(entries[name].shape + (2,), entries[name].dtype)


def _nan_param(entries):
    entries["param/W1"] = np.full_like(entries["param/W1"], np.nan)


@pytest.mark.parametrize(
    "change, fragments",
    [
        (_setter("epoch", np.array(-1000000)), ["'epoch'", "-1000000", "[0, 2]"]),
        (_setter("epoch", np.array(10**9)), ["'epoch'", "1000000000", "[0, 2]"]),
        (_setter("epoch", np.array(1.5)), ["'epoch'", "1.5"]),
        (_setter("optimizer/iter", np.array(-5)), ["'optimizer/iter'", "-5"]),
        (_int64_m, ["'optimizer/m/", "int64", "float"]),
        (_negative_v, ["'optimizer/v/", ">= 0"]),
        (_nan_v, ["'optimizer/v/", "NaN"]),
        (_v_of_another_shape, ["'optimizer/v/", "shape"]),
        (_nan_param, ["'param/W1'", "NaN"]),
        (_setter("trainer_rng", np.array('{"bit_generator": "PCG64", "state": 3}')), ["'trainer_rng'"]),
        (_setter("network_rng", np.array("[1, 2]")), ["'network_rng'"]),
        (
            _setter("trainer_rng", lambda text: np.array(re.sub(r'"has_uint32": [01]', '"has_uint32": 5', str(text)))),
            ["'trainer_rng'", "has_uint32"],
        ),
        (_setter("history", np.array('{"train_loss_list": 3}')), ["'history'"]),
    ],
)
def test_resume_validates_every_checkpoint_value_and_names_the_entry(tmp_path, change, fragments):
    x, t, path = _tampered_checkpoint(tmp_path, change)
    with pytest.raises(ValueError) as info:
        make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_resume_validates_the_weight_average_and_best_weights(tmp_path):
    from deepnet.trainer import WeightAverage

    x, t, path = _tampered_checkpoint(
        tmp_path, _setter("callbacks/weight_average/steps", np.array(-3)), hooks=[WeightAverage(0.9)]
    )
    with pytest.raises(ValueError, match=r"'callbacks/weight_average/steps'.*-3"):
        make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True, hooks=[WeightAverage(0.9)])

    def bad_average(entries):
        entries["callbacks/weight_average/average/W1"] = np.full_like(
            entries["callbacks/weight_average/average/W1"], np.inf
        )

    x, t, path = _tampered_checkpoint(tmp_path, bad_average, hooks=[WeightAverage(0.9)])
    with pytest.raises(ValueError, match=r"'callbacks/weight_average/average/W1'.*(NaN|infinite)"):
        make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True, hooks=[WeightAverage(0.9)])


def test_an_untampered_checkpoint_still_resumes(tmp_path):
    x, t, path = _tampered_checkpoint(tmp_path, lambda entries: None)
    trainer = make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True)
    assert trainer.epoch == 1
    trainer.train()


def test_resume_refuses_a_negative_batch_norm_variance(tmp_path):
    x, t = random_data(64)
    path = tmp_path / "c.npz"
    network = DeepConvNet(
        input_dim=(1, 12, 12),
        conv_param_1=conv(2),
        conv_param_2=conv(2),
        conv_param_3=conv(3),
        conv_param_4=conv(3, pad=2),
        conv_param_5=conv(4),
        conv_param_6=conv(4),
        hidden_size=8,
        output_size=3,
        batch_norm=True,
        seed=0,
    )
    make_trainer(network, x, t, epochs=1, checkpoint_path=path).train()
    with np.load(path) as f:
        entries = {name: f[name] for name in f.files}
    entries["param/buffers/running_var1"] = -entries["param/buffers/running_var1"] - 1
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(ValueError, match=r"'param/buffers/running_var1' \(a variance\) must be >= 0"):
        make_trainer(network, x, t, epochs=2, checkpoint_path=path, resume=True)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_last_batch_of_one_joins_the_batch_before_it_only_with_batch_norm(batch_norm):
    """BatchNormalization refuses to train on one value per channel, so an epoch of 2k+1
    examples at batch k runs as batches of k and k+1 there; without BN as k, k, 1."""
    from deepnet import layers as L
    from deepnet.nets import Sequential, affine_layer, batch_norm_layer

    rng = np.random.default_rng(0)
    body = [affine_layer(4, 6, rng, np.float64)]
    body += [batch_norm_layer(6, np.float64, relu=True)] if batch_norm else [L.Relu()]
    net = Sequential(*body, affine_layer(6, 3, rng, np.float64))
    x, t = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    sizes = []
    step = Trainer.train_step

    def recording_step(self, x_batch, t_batch):
        sizes.append(len(x_batch))
        return step(self, x_batch, t_batch)

    trainer = Trainer(net, x, t, epochs=1, mini_batch_size=4, verbose=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train_step", recording_step)
        trainer.train()
    assert sizes == ([4, 5] if batch_norm else [4, 4, 1])
    assert trainer._steps_per_epoch() == len(sizes) == trainer.optimizer.iter
