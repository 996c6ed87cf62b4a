"""The trainer's callbacks (deepnet.training.callbacks) and their place in checkpoints."""

import json

import numpy as np
import pytest

from deepnet.training import Callback, Trainer, WeightAverage
from deepnet.training.schedules import Schedule
from test_trainer import interrupt_after, make_trainer, random_data, tiny_deep_convnet


class Counter(Callback):
    """Counts the calls, and keeps the count in checkpoints."""

    def __init__(self, name=None):
        if name:
            self.name = name
        self.calls = {"begin": 0, "epoch_begin": 0, "step_begin": 0, "step_end": 0, "epoch_end": 0, "end": 0}

    def on_train_begin(self, trainer):
        self.calls["begin"] += 1

    def on_epoch_begin(self, trainer):
        self.calls["epoch_begin"] += 1

    def on_train_end(self, trainer):
        self.calls["end"] += 1

    def on_step_begin(self, trainer):
        self.calls["step_begin"] += 1

    def on_step_end(self, trainer):
        self.calls["step_end"] += 1

    def on_epoch_end(self, trainer):
        self.calls["epoch_end"] += 1

    def state_dict(self):
        return {"steps": np.array(self.calls["step_end"])}

    def load_state_dict(self, state):
        self.calls["step_end"] = int(state["steps"])


def test_the_loop_calls_each_callback_method_when_it_says():
    x, t = random_data(150)  # 3 steps an epoch of 64
    counter = Counter()
    make_trainer(tiny_deep_convnet(), x, t, epochs=2, callbacks=[counter]).train()
    assert counter.calls == {"begin": 1, "epoch_begin": 2, "step_begin": 6, "step_end": 6, "epoch_end": 2, "end": 1}


def test_the_trainers_own_callbacks_come_after_the_given_ones_and_report_as_before(tmp_path, capsys):
    x, t = random_data(150)
    seen = []

    class Look(Callback):
        def on_epoch_end(self, trainer):  # after the evaluation, before the history file and checkpoint
            seen.append(
                (
                    trainer.epoch,
                    len(trainer.train_acc_list),
                    len(trainer.epoch_times),
                    (tmp_path / "h.json").exists(),
                    trainer.checkpoint_epoch,
                )
            )

    trainer = make_trainer(
        tiny_deep_convnet(),
        x,
        t,
        epochs=2,
        callbacks=[Look()],
        verbose=True,
        history_path=tmp_path / "h.json",
        checkpoint_path=tmp_path / "c.npz",
    )
    trainer.train()
    assert seen == [(1, 1, 1, False, None), (2, 2, 2, True, 1)]
    assert [callback.callback_name for callback in trainer.all_callbacks] == [
        "evaluation",
        "epoch_timer",
        "Look",
        "progress_bar",
        "epoch_report",
        "history",
        "checkpointing",
    ]
    out = capsys.readouterr().out
    assert out.count("epoch 1/2: train acc") == 1 and "Final Test Accuracy" in out
    assert json.loads((tmp_path / "h.json").read_text())["final_test"]["images"] == 30


def test_the_book_call_still_works_and_the_default_optimizer_setting_is_not_shared():
    x, t = random_data(64)
    first = Trainer(
        tiny_deep_convnet(),
        x,
        t,
        epochs=1,
        mini_batch_size=64,
        optimizer="Adam",
        evaluate_sample_num_per_epoch=10,
        verbose=False,
    )
    assert first.optimizer.lr == 0.001
    first.optimizer.lr = 0.5
    second = Trainer(tiny_deep_convnet(), x, t, epochs=1, verbose=False)
    assert second.optimizer.lr == 0.001


def test_checkpoint_state_is_keyed_by_callback_name(tmp_path):
    x, t = random_data(64)
    path = tmp_path / "c.npz"
    make_trainer(
        tiny_deep_convnet(),
        x,
        t,
        epochs=1,
        checkpoint_path=path,
        hooks=[Schedule("constant", 0.001, 1, 1), WeightAverage(0.9), Counter("count")],
    ).train()
    with np.load(path) as f:
        names = set(f.files)
        config = json.loads(str(f["config"]))
    assert "callbacks/count/steps" in names and "callbacks/weight_average/steps" in names
    assert any(name.startswith("callbacks/weight_average/average/") for name in names)
    assert not any(name.startswith("hook") for name in names)
    assert set(config["callbacks"]) == {"lr_schedule", "weight_average"}


def test_reordered_callbacks_resume_bit_exactly(tmp_path):
    x, t = random_data(150)
    steps = 3

    def callbacks(order):
        parts = [Schedule("cosine", 0.01, steps, 2, min_lr=1e-4), WeightAverage(0.9), Counter("count")]
        return [parts[i] for i in order]

    whole = make_trainer(tiny_deep_convnet(), x, t, callbacks=callbacks([0, 1, 2]))
    whole.train()
    path = tmp_path / "c.npz"
    first = make_trainer(tiny_deep_convnet(), x, t, checkpoint_path=path, callbacks=callbacks([0, 1, 2]))
    interrupt_after(first, steps + 1)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = make_trainer(
        tiny_deep_convnet(seed=5), x, t, checkpoint_path=path, resume=True, callbacks=callbacks([2, 1, 0])
    )
    assert resumed.epoch == 1 and resumed.callbacks[0].calls["step_end"] == steps
    resumed.train()
    assert resumed.train_loss_list == whole.train_loss_list
    for name, value in whole.network.params.items():
        np.testing.assert_array_equal(resumed.network.params[name], value, err_msg=name)


def test_a_checkpoint_of_an_older_deepnet_is_refused_in_one_line(tmp_path):
    """Before callbacks were keyed by name, their state was kept by position (hook0/...)."""
    x, t = random_data(64)
    path = tmp_path / "c.npz"
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, checkpoint_path=path, hooks=[WeightAverage(0.9)]).train()
    with np.load(path) as f:
        entries = {name.replace("callbacks/weight_average/", "hook0/"): f[name] for name in f.files}
    config = json.loads(str(entries["config"]))
    config.pop("format")
    config["hooks"] = list(config.pop("callbacks").values())
    entries["config"] = np.array(json.dumps(config))
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(ValueError) as error:
        make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True, hooks=[WeightAverage(0.9)])
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "older deepnet" in message


def test_a_checkpoint_with_the_state_of_a_callback_this_run_lacks_is_refused(tmp_path):
    x, t = random_data(64)
    path = tmp_path / "c.npz"
    make_trainer(tiny_deep_convnet(), x, t, epochs=1, checkpoint_path=path, callbacks=[Counter("count")]).train()
    with pytest.raises(ValueError, match=r"'callbacks/count'.*callback this run does not have"):
        make_trainer(tiny_deep_convnet(), x, t, epochs=2, checkpoint_path=path, resume=True)


def test_callbacks_must_be_callbacks_with_distinct_names():
    x, t = random_data(64)

    class Plain:
        def after_step(self, trainer):
            pass

    with pytest.raises(TypeError, match="Callback"):
        make_trainer(tiny_deep_convnet(), x, t, callbacks=[Plain()])
    with pytest.raises(ValueError, match="two callbacks are named 'weight_average'"):
        make_trainer(tiny_deep_convnet(), x, t, callbacks=[WeightAverage(0.9), WeightAverage(0.5)])
    make_trainer(tiny_deep_convnet(), x, t, callbacks=[Counter("a"), Counter("b")])
