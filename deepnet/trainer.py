"""Training loop of the book's ``common/trainer.py``, with validation, hooks and checkpoints.

Each epoch visits every training sample once, in an order drawn from a seeded Generator
(the last, smaller batch included).  The loop itself is fixed; what varies plugs in:

- ``batch_transform(x_batch, rng)``: e.g. ``deepnet.augment.Augment`` (data augmentation),
  drawing from the trainer's own seeded generator, so a checkpoint holds its state too;
- ``hooks``: objects with any of ``before_step(trainer)`` (a learning-rate schedule),
  ``after_step(trainer)`` (a weight average), ``after_epoch(trainer)`` (callbacks),
  ``evaluation_params(trainer)`` (the weights to evaluate and keep, e.g. the average),
  ``state_dict()`` / ``load_state_dict(state)`` (saved in checkpoints) and ``spec()``
  (settings a resumed run must share);
- ``communicator``: data-parallel training (``deepnet.distributed``); each rank computes
  the gradient of its slice of every global batch and the gradients are averaged.

Two ways to measure progress:

- with validation data (``x_val``): per epoch the whole validation set is evaluated; the
  test set is evaluated once, at the end; ``select="best-val"`` keeps the weights of the
  epoch with the best validation accuracy;
- without (the book's recipe): per epoch, train and test accuracy on the first
  ``evaluate_sample_num_per_epoch`` images of each, as the book prints them.

After each epoch the trainer writes the history (JSON) and a checkpoint from which
``resume`` continues bit-exactly: same parameters as an uninterrupted run.
"""
import contextlib
import hashlib
import json
import math
import os
import time

import numpy as np
from tqdm import tqdm

from . import _array, _memory, io
from ._dtypes import compute_dtype
from .distributed import SingleProcess
from .optimizers import get_optimizer

__all__ = ["Trainer", "WeightAverage"]

SELECT = ("last", "best-val")
# The command line's words for the optimizer settings in _config().
_OPTIMIZER_SETTING_NAMES = {"lr": "--lr", "weight_decay": "--weight-decay"}
_HISTORY_LISTS = ("train_loss_list", "train_acc_list", "val_acc_list", "test_acc_list", "lr_list", "epoch_times")
CHECKPOINT_TEXT = ("config", "history", "trainer_rng", "network_rng")  # JSON entries of a checkpoint


def batch_starts(n, batch_size, batch_norm=False):
    """Where each mini-batch of an epoch of ``n`` examples starts.  With BatchNormalization
    a last batch of one example joins the batch before it: BN cannot train on one value
    per channel."""
    starts = list(range(0, n, batch_size))
    if batch_norm and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


class Trainer:
    """Trains ``network`` (a deepnet.models.Sequential, e.g. DeepConvNet) with mini-batches.

    ``checkpoint_path``: saved after every epoch; with ``resume=True`` training continues
    from it when it exists (and starts afresh when it does not yet).  ``optimizer``: a
    name (with ``optimizer_param``) or an Optimizer instance.
    """

    def __init__(self, network, x_train, t_train, x_test=None, t_test=None,
                 epochs=20, mini_batch_size=100,
                 optimizer="Adam", optimizer_param={"lr": 0.001},
                 evaluate_sample_num_per_epoch=None, verbose=True, seed=None,
                 checkpoint_path=None, history_path=None, resume=False,
                 x_val=None, t_val=None, select="last", hooks=(), batch_transform=None,
                 communicator=None):
        if select not in SELECT:
            raise ValueError(f"Trainer: select must be one of {SELECT}, got {select!r}")
        if select == "best-val" and x_val is None:
            raise ValueError("Trainer: select='best-val' needs validation data (x_val, t_val)")
        if len(x_train) == 0 or len(x_train) != len(t_train):
            raise ValueError(f"Trainer: {len(x_train)} training images and {len(t_train)} labels")
        self.network = network
        self.x_train, self.t_train = x_train, t_train
        self.x_val, self.t_val = x_val, t_val
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.optimizer = get_optimizer(optimizer, **optimizer_param)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.rng = np.random.default_rng(seed)
        self.checkpoint_path = checkpoint_path
        self.history_path = history_path
        self.select = select
        self.hooks = list(hooks)
        self.batch_transform = batch_transform
        self.communicator = communicator or SingleProcess()
        self._optimizer_settings = _settings(self.optimizer)
        # Which images are held out (a resumed run must keep them out of training).
        self._validation_digest = (hashlib.sha256(np.ascontiguousarray(_array.to_cpu(x_val)).tobytes()).hexdigest()[:16]
                                   if x_val is not None else None)

        self.epoch = 0  # epochs completed so far
        self.train_loss_list = []
        self.train_acc_list = []
        self.val_acc_list = []
        self.test_acc_list = []
        self.lr_list = []      # the learning rate at the end of each epoch
        self.epoch_times = []  # wall-clock seconds of each epoch (training + evaluation)
        self.best = None       # (epoch, val accuracy, {name: array}) with select="best-val"
        self.final_test = None  # {"accuracy", "images"}: the one evaluation of the test set
        self.checkpoint_epoch = None  # the epoch of the last checkpoint this trainer wrote

        if self.communicator.size > 1:
            self._check_ranks_agree(resume)
        resumed = resume and self._resume_if_possible()
        if not resumed and self.communicator.size > 1:  # every rank starts from rank 0's state
            self._apply_state(self.communicator.broadcast_object(self._state()), "rank 0's state")

    @property
    def validating(self):
        return self.x_val is not None

    # -- training ----------------------------------------------------------------------

    def train(self):
        """Train for the remaining epochs, keep the selected weights in the network, and
        return the accuracy on the whole test set (evaluated once, here; None without one)."""
        _memory.keep_freed_memory()  # a step's freed activations are reused by the next
        for epoch in range(self.epoch, self.epochs):
            start = time.perf_counter()
            self._train_epoch(epoch)
            self._evaluate()
            self.epoch_times.append(time.perf_counter() - start)
            self.lr_list.append(float(self.optimizer.lr))
            self.epoch = epoch + 1
            for hook in self._hooks_with("after_epoch"):
                hook.after_epoch(self)
            self._report_epoch()
            self._save_history()
            self._save_checkpoint()
        self._keep_selected_weights()
        if self.x_test is None:
            return None
        test_acc = self._accuracy(self.x_test, self.t_test)
        self.final_test = {"accuracy": test_acc, "images": len(self.x_test)}
        self._save_history()
        if self.verbose and self.communicator.is_root:
            print("=============== Final Test Accuracy ===============")
            print(f"test acc: {test_acc:.4f} on all {len(self.x_test)} test images "
                  f"(evaluated once, after training; weights: {self._selected_description()})")
        return test_acc

    def _train_epoch(self, epoch):
        order = self.rng.permutation(len(self.x_train))
        show = self.verbose and self.communicator.is_root
        starts = self._batch_starts()
        with _progress_bar(len(order), f"epoch {epoch + 1}/{self.epochs}", show) as bar:
            for start, stop in zip(starts, starts[1:] + [len(order)]):
                batch = order[start:stop]
                loss = self.train_step(self.x_train[batch], self.t_train[batch])
                bar.update(len(batch))
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def train_step(self, x_batch, t_batch):
        """One optimizer step on one (global) mini-batch; returns (and records) its loss."""
        if self.batch_transform is not None:
            x_batch = self.batch_transform(x_batch, rng=self.rng)
        for hook in self._hooks_with("before_step"):
            hook.before_step(self)
        comm = self.communicator
        first, stop = comm.shard(len(x_batch))
        share = (stop - first) / len(x_batch)  # of the global batch's mean loss
        with comm.global_batch(self.network, len(x_batch), first):
            loss, grads = self.network.loss_and_gradient(x_batch[first:stop], t_batch[first:stop], share)
        loss, grads = comm.sum_gradients(float(loss) * share if share else 0.0, grads)
        self.optimizer.update(self.network.params, grads)
        for hook in self._hooks_with("after_step"):
            hook.after_step(self)
        self.train_loss_list.append(loss)
        return loss

    def _hooks_with(self, method):
        return [hook for hook in self.hooks if hasattr(hook, method)]

    # -- evaluation and the weights kept --------------------------------------------------

    @contextlib.contextmanager
    def evaluation_weights(self):
        """Inside the block the network holds the weights to evaluate (e.g. the average)."""
        supplied = self._supplied_weights()
        if supplied is None:
            yield
            return
        with _swapped_in(self.network, supplied):
            yield

    def _supplied_weights(self):
        """The weights a hook supplies for evaluation (the last such hook's), or None."""
        supplied = [hook.evaluation_params(self) for hook in self._hooks_with("evaluation_params")]
        return supplied[-1] if supplied else None

    def _accuracy(self, x, t):
        """Accuracy on all of x; with several ranks each classifies its share."""
        if len(x) == 0:
            raise ValueError("Trainer: no images to evaluate")
        first, stop = self.communicator.shard(len(x))
        labels = _array.to_cpu(t[first:stop])
        if labels.ndim != 1:
            labels = labels.argmax(axis=1)
        correct = np.count_nonzero(self.network.classify(x[first:stop]) == labels)
        return float(self.communicator.sum(np.array([correct], dtype=np.float64))[0]) / len(x)

    def _evaluate(self):
        accuracy = self._accuracy
        with self.evaluation_weights():
            if self.validating:
                val_acc = accuracy(self.x_val, self.t_val)
                self.val_acc_list.append(val_acc)
                if self.select == "best-val" and (self.best is None or val_acc > self.best[1]):
                    self.best = (self.epoch + 1, val_acc, _snapshot(self.network))
            else:
                n = self.evaluate_sample_num_per_epoch  # None: every sample
                self.train_acc_list.append(accuracy(self.x_train[:n], self.t_train[:n]))
                if self.x_test is not None:
                    self.test_acc_list.append(accuracy(self.x_test[:n], self.t_test[:n]))

    def _keep_selected_weights(self):
        if self.select == "best-val" and self.best is not None:
            _load_snapshot(self.network, self.best[2])
            return
        supplied = self._supplied_weights()
        if supplied is not None:
            _load_snapshot(self.network, supplied)

    def _selected_description(self):
        if self.select == "best-val" and self.best is not None:
            return f"epoch {self.best[0]}, best validation accuracy {self.best[1]:.4f}"
        averaged = "the weight average" if self._hooks_with("evaluation_params") else "the last"
        return f"{averaged} after epoch {self.epoch}"

    def _report_epoch(self):
        if not (self.verbose and self.communicator.is_root):
            return
        seconds = f"{self.epoch_times[-1]:.1f} s"
        loss = float(np.mean(self.train_loss_list[-self._steps_per_epoch():]))
        if self.validating:
            print(f"epoch {self.epoch}/{self.epochs}: train loss {loss:.4f}, val acc {self.val_acc_list[-1]:.4f} "
                  f"(all {len(self.x_val)} validation images), lr {self.optimizer.lr:.3g}, {seconds}")
            return
        n = self.evaluate_sample_num_per_epoch
        measured = [f"train acc {self.train_acc_list[-1]:.4f} ({_first(n, len(self.x_train))} training images)"]
        if self.test_acc_list:
            measured.append(f"test acc {self.test_acc_list[-1]:.4f} ({_first(n, len(self.x_test))} test images)")
        print(f"epoch {self.epoch}/{self.epochs}: {', '.join(measured)}, {seconds}")

    def _batch_starts(self):
        batch_norm = bool(getattr(self.network, "batch_norm_layers", list)())
        return batch_starts(len(self.x_train), self.batch_size, batch_norm)

    def _steps_per_epoch(self):
        return len(self._batch_starts())

    # -- history and checkpoints -------------------------------------------------------

    def history(self):
        """The per-epoch and per-iteration records, as plain (JSON-ready) Python data."""
        n = self.evaluate_sample_num_per_epoch
        evaluated = ({"val": len(self.x_val)} if self.validating else
                     {"train": min(n or len(self.x_train), len(self.x_train)),
                      "test": min(n or len(self.x_test), len(self.x_test)) if self.x_test is not None else 0})
        return {
            "epochs_done": self.epoch,
            "train_loss_list": self.train_loss_list,
            "train_acc_list": self.train_acc_list,
            "val_acc_list": self.val_acc_list,
            "test_acc_list": self.test_acc_list,
            "lr_list": self.lr_list,
            "epoch_times": self.epoch_times,
            "images_evaluated_per_epoch": evaluated,
            "final_test": self.final_test,
            "dropout": bool(getattr(self.network, "dropout_layers", list)()),  # in the training loss
        }

    def _save_history(self):
        if self.history_path and self.communicator.is_root:
            with io.atomic_write(self.history_path, "w") as f:
                json.dump(self.history(), f, indent=1)

    def _save_checkpoint(self):
        if not self.checkpoint_path or not self.communicator.is_root:
            return
        with io.atomic_write(self.checkpoint_path) as f:
            np.savez(f, **self._state())
        self.checkpoint_epoch = self.epoch

    def _state(self):
        """Everything a resumed run needs, as the arrays of a checkpoint."""
        arrays = {f"param/{name}": _array.to_cpu(value) for name, value in _snapshot(self.network, copy=False).items()}
        arrays.update({f"optimizer/{name}": value for name, value in self.optimizer.state_dict().items()})
        for index, hook in enumerate(self._stateful()):
            arrays.update({f"hook{index}/{name}": value for name, value in hook.state_dict().items()})
        if self.best is not None:
            arrays.update({f"best/{name}": value for name, value in self.best[2].items()})
            arrays["best_epoch_and_accuracy"] = np.array([self.best[0], self.best[1]])
        arrays["trainer_rng"] = json.dumps(self.rng.bit_generator.state)
        arrays["network_rng"] = json.dumps(self.network.random_state())
        arrays["epoch"] = self.epoch
        arrays["history"] = json.dumps(self.history())
        arrays["config"] = json.dumps(self._config())
        return arrays

    def _stateful(self):
        """Hooks and the batch transform that keep state of their own (in checkpoints)."""
        parts = self.hooks + ([self.batch_transform] if self.batch_transform is not None else [])
        return [part for part in parts if hasattr(part, "state_dict")]

    def _config(self):
        """Settings that must match for a resumed run to continue the same run."""
        specs = [part.spec() for part in self.hooks + [self.batch_transform] if hasattr(part, "spec")]
        return {"optimizer": type(self.optimizer).__name__, "optimizer_settings": self._optimizer_settings,
                "mini_batch_size": self.batch_size, "train_size": len(self.x_train),
                "val_size": len(self.x_val) if self.validating else 0, "validation": self._validation_digest,
                "select": self.select,
                "dtype": str(self.network.dtype), "model": _model_spec_or_none(self.network),
                "hooks": specs}

    def resume(self, checkpoint_path=None):
        """Restore parameters, optimizer, hooks, RNGs, epoch and history from a checkpoint
        (read by rank 0 and broadcast to the others)."""
        path = os.fspath(checkpoint_path or self.checkpoint_path)
        state = self.communicator.broadcast_object(
            io.read_params(path, text=CHECKPOINT_TEXT) if self.communicator.is_root else None)
        self._apply_state(state, path)
        return self

    def _apply_state(self, state, path):
        if "config" not in state:
            raise ValueError(f"{path} is not a deepnet training checkpoint")
        try:
            self._check_config(json.loads(str(state["config"])), path)
            check = _EntryCheck(path)
            targets = _snapshot(self.network, copy=False)
            params = _entries(state, "param/")
            for name, value in params.items():
                check.finite_float(f"param/{name}", value)
                if "running_var" in name:
                    check.non_negative(f"param/{name}", value)
            self.network.set_params(params, source=path)
            optimizer_state = _entries(state, "optimizer/")
            self._check_optimizer_state(check, optimizer_state)
            try:
                self.optimizer.load_state_dict(optimizer_state, prefix="optimizer/")
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            for index, hook in enumerate(self._stateful()):
                hook_state = _entries(state, f"hook{index}/")
                for name, value in hook_state.items():
                    if name.startswith("average/"):
                        check.like(f"hook{index}/{name}", value, targets.get(name[len("average/"):]))
                        if "running_var" in name:
                            check.non_negative(f"hook{index}/{name}", value)
                    elif np.ndim(value) == 0:
                        check.count(f"hook{index}/{name}", value)
                hook.load_state_dict(hook_state)
            epoch = check.count("epoch", state["epoch"], upper=self.epochs)
            steps = self._steps_per_epoch()
            if self.optimizer.iter != epoch * steps:
                raise ValueError(f"{path}: 'optimizer/iter' is {self.optimizer.iter}, expected {epoch * steps} "
                                 f"after {epoch} epochs of {steps} steps")
            best = _entries(state, "best/")
            if best:
                for name, value in best.items():
                    check.like(f"best/{name}", value, targets.get(name))
                    if "running_var" in name:
                        check.non_negative(f"best/{name}", value)
                best_epoch, accuracy = check.pair("best_epoch_and_accuracy", state["best_epoch_and_accuracy"])
                if not (1 <= best_epoch <= epoch and best_epoch == int(best_epoch) and 0 <= accuracy <= 1):
                    raise ValueError(f"{path}: 'best_epoch_and_accuracy' must be an epoch in [1, {epoch}] and an "
                                     f"accuracy in [0, 1], got {best_epoch!r}, {accuracy!r}")
                self.best = (int(best_epoch), float(accuracy), best)
            check.random_state("trainer_rng", lambda value: setattr(self.rng.bit_generator, "state", value),
                               state["trainer_rng"])
            check.random_state("network_rng", self.network.set_random_state, state["network_rng"])
            history = check.history(state["history"], epoch, self.optimizer.iter)
            self.epoch = epoch
            for key in _HISTORY_LISTS:
                setattr(self, key, list(history[key]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: damaged training checkpoint ({type(exc).__name__}: {exc})") from None

    def _check_optimizer_state(self, check, state):
        """Each optimizer state array belongs to a parameter and has its shape and state dtype."""
        for entry, value in state.items():
            name, _, key = entry.partition("/")
            if key:
                param = self.network.params.get(key)
                if param is None:
                    raise ValueError(f"{check.path}: 'optimizer/{entry}' is for no parameter of this network")
                check.like(f"optimizer/{entry}", value, param, dtype=compute_dtype(param.dtype))

    def _check_config(self, saved, path):
        current = json.loads(json.dumps(self._config()))  # the same JSON types as the saved one
        differences = _setting_differences(saved, current)
        if differences:
            raise ValueError(f"checkpoint {path} was made with other settings ("
                             + "; ".join(f"{name}: saved {_brief(was)}, now {_brief(now)}"
                                         for name, (was, now) in differences.items())
                             + "): resume with the same settings, or start a new run (--overwrite)")

    def _check_ranks_agree(self, resume):
        """Settings that change the sequence of collective calls must be the same on every
        rank: with another number of epochs or another resume, the ranks would wait for each
        other forever, or exchange mismatched messages."""
        differences = self.communicator.differences({
            "epochs": self.epochs, "resume": bool(resume), "checkpoint_path": bool(self.checkpoint_path),
            "evaluate_sample_num_per_epoch": self.evaluate_sample_num_per_epoch,
            "test images": None if self.x_test is None else len(self.x_test),
            "validation images": len(self.x_val) if self.validating else None,
            "training images": len(self.x_train), "batch size": self.batch_size, "select": self.select,
            "hooks": [type(part).__name__ for part in self.hooks + [self.batch_transform] if part is not None]})
        if differences:
            raise ValueError(f"Trainer: the ranks were given different settings ({differences})")

    def _resume_if_possible(self):
        """Resume if the checkpoint exists (rank 0 looks, and tells the others); True if so."""
        if not self.checkpoint_path:
            raise ValueError("resume=True needs a checkpoint_path")
        comm = self.communicator
        exists = comm.broadcast_object(os.path.exists(self.checkpoint_path) if comm.is_root else None)
        if exists:
            self.resume()
        if self.verbose and comm.is_root:
            print(f"resumed from {self.checkpoint_path} after epoch {self.epoch}" if exists else
                  f"no checkpoint at {self.checkpoint_path} yet: starting from epoch 1")
        return exists


class WeightAverage:
    """An exponential moving average of the weights (Polyak averaging), as a trainer hook.

    After every step, average = d * average + (1 - d) * weights, with d = min(decay,
    (1 + t) / (10 + t)) so that the early, random weights are soon forgotten.  Buffers
    (BN running statistics) are averaged too.  The trainer evaluates and keeps the
    average instead of the last weights.
    """

    def __init__(self, decay=0.999):
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.average = None
        self.steps = 0

    def after_step(self, trainer):
        current = _snapshot(trainer.network, copy=False)
        if self.average is None:
            self.average = {name: value.astype(compute_dtype(value.dtype), copy=True)
                            for name, value in current.items()}
        else:
            self.steps += 1
            d = min(self.decay, (1 + self.steps) / (10 + self.steps))
            for name, value in current.items():
                average = self.average[name]
                if type(average) is not type(value):  # restored on the host, training on the GPU
                    average = self.average[name] = _array.get_array_module(value).asarray(average)
                average *= d
                average += (1 - d) * value.astype(average.dtype, copy=False)

    def evaluation_params(self, trainer):
        return self.average if self.average is not None else _snapshot(trainer.network)

    def state_dict(self):
        state = {"steps": np.array(self.steps)}
        if self.average is not None:
            state.update({f"average/{name}": _array.to_cpu(value) for name, value in self.average.items()})
        return state

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        average = _entries(state, "average/")
        self.average = average or None

    def spec(self):
        return {"weight_average": self.decay}


def _snapshot(network, copy=True):
    """The network's parameters and buffers (``buffers/<name>``), copied by default."""
    arrays = network.named_arrays()
    if copy:
        arrays = {name: value.copy() for name, value in arrays.items()}
    return arrays


def _load_snapshot(network, arrays):
    network.set_params(arrays, source="kept weights")


@contextlib.contextmanager
def _swapped_in(network, arrays):
    saved = _snapshot(network)
    _load_snapshot(network, arrays)
    try:
        yield
    finally:
        _load_snapshot(network, saved)


def _settings(optimizer):
    return {key: value for key, value in vars(optimizer).items()
            if not key.startswith("_") and key != "iter" and isinstance(value, (int, float, str, bool))}


def _model_spec_or_none(network):
    try:
        return network.spec()
    except (AttributeError, ValueError):
        return None


def _named_settings(config, validating):
    """A checkpoint's config as {the command line's name for a setting: value}, one entry
    per setting, so a refused resume names exactly the ones that differ."""
    named = {}
    for key, value in config.items():
        if key == "optimizer":
            named["--optimizer"] = value
        elif key == "optimizer_settings":
            for setting, number in value.items():
                named[_OPTIMIZER_SETTING_NAMES.get(setting, f"optimizer setting {setting}")] = number
        elif key == "mini_batch_size":
            named["--batch-size"] = value
        elif key == "train_size":
            name = "training images (--train-size less --val-size)" if validating else "--train-size"
            named[name] = value
        elif key == "validation":
            named["validation images (drawn with --seed)"] = value
        elif key == "hooks":
            for spec in value:
                named.update(_named_hook_settings(spec))
        else:
            named[{"val_size": "--val-size", "select": "--select", "dtype": "--dtype",
                   "model": "--model"}.get(key, key)] = value
    named.setdefault("--augment", "none")
    named.setdefault("--ema", "none")
    return named


def _named_hook_settings(spec):
    if isinstance(spec, str):
        return {"--augment": spec}
    if isinstance(spec, dict) and "weight_average" in spec:
        return {"--ema": spec["weight_average"]}
    if isinstance(spec, dict) and "name" in spec:  # a learning-rate schedule
        settings = {k: v for k, v in spec.items() if k not in ("name", "lr", "steps_per_epoch", "warmup", "epochs")}
        named = {"--lr-schedule": spec["name"] + "".join(
                     (":" if i == 0 else ",") + f"{k}={v:g}" for i, (k, v) in enumerate(sorted(settings.items()))),
                 "--warmup": spec.get("warmup"), "steps per epoch (training images / --batch-size)":
                     spec.get("steps_per_epoch")}
        if "epochs" in spec:
            named[f"--epochs (the length of the {spec['name']} schedule)"] = spec["epochs"]
        return named
    return {f"setting {_brief(spec)}": spec}


def _setting_differences(saved, current):
    """{name: (saved, current)} for the settings that differ, leaving out those that only
    follow from another difference (steps per epoch from the training set, say)."""
    validating = bool(saved.get("val_size") or current.get("val_size"))
    was, now = _named_settings(saved, validating), _named_settings(current, validating)
    differences = {name: (was.get(name, "none"), now.get(name, "none")) for name in {**was, **now}
                   if was.get(name, "none") != now.get(name, "none")}
    train = {name for name in differences if name.startswith("training images") or name == "--train-size"}
    if train or "--batch-size" in differences:
        differences.pop("steps per epoch (training images / --batch-size)", None)
    if train or "--val-size" in differences:
        differences.pop("validation images (drawn with --seed)", None)
    if "--lr-schedule" in differences:  # a schedule's length is known to only some schedules
        for name in [name for name in differences if name.startswith("--epochs (the length")]:
            differences.pop(name)
    if "--val-size" in differences and len(train) == 1:
        (name,) = train
        if differences[name][0] + differences["--val-size"][0] == differences[name][1] + differences["--val-size"][1]:
            differences.pop(name)  # the same images, split otherwise
    return differences


def _brief(value):
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first(n, total):
    return f"first {n}" if n is not None and n < total else f"all {total}"


def _progress_bar(total, description, enabled):
    """A tqdm bar counting images, so its rate reads images/s; none unless stderr is a
    terminal (no redraws in a log file)."""
    return tqdm(total=total, desc=description, unit="img", unit_scale=True,
                disable=None if enabled else True, leave=False, dynamic_ncols=True)


class _EntryCheck:
    """Checks of a checkpoint's entries; each failure is a ValueError naming the file and the entry."""

    def __init__(self, path):
        self.path = path

    def fail(self, entry, what):
        raise ValueError(f"{self.path}: {entry!r} {what}")

    def finite_float(self, entry, value):
        value = np.asarray(value)
        if value.dtype.kind != "f":
            self.fail(entry, f"must be a floating-point array, got {value.dtype}")
        if not np.isfinite(value).all():
            self.fail(entry, "holds NaN or infinite values (a diverged run?)")

    def non_negative(self, entry, value):
        if np.asarray(value).size and np.asarray(value).min() < 0:
            self.fail(entry, f"(a variance) must be >= 0, got a minimum of {float(np.asarray(value).min())!r}")

    def like(self, entry, value, target, dtype=None):
        """A finite float array with ``target``'s shape (and ``dtype``, default target's)."""
        if target is None:
            self.fail(entry, "is for no parameter or buffer of this network")
        value = np.asarray(value)
        self.finite_float(entry, value)
        if value.shape != tuple(target.shape):
            self.fail(entry, f"has shape {value.shape}, the parameter has {tuple(target.shape)}")
        if value.dtype != np.dtype(dtype or target.dtype):
            self.fail(entry, f"has dtype {value.dtype}, expected {np.dtype(dtype or target.dtype)}")

    def count(self, entry, value, upper=None):
        """An integer (0-d integer array) in [0, upper]."""
        value = np.asarray(value)
        number = value.item() if value.shape == () else None
        bounds = f"[0, {upper}]" if upper is not None else ">= 0"
        if value.dtype.kind not in "iu" or number is None:
            self.fail(entry, f"must be an integer in {bounds}, got {_value_text(value)}")
        if number < 0 or (upper is not None and number > upper):
            self.fail(entry, f"must be an integer in {bounds}, got {number}"
                      + (" (more epochs than this run's --epochs)" if upper is not None and number > upper else ""))
        return int(number)

    def pair(self, entry, value):
        value = np.asarray(value)
        if value.shape != (2,) or value.dtype.kind not in "fiu" or not np.isfinite(value).all():
            self.fail(entry, f"must be two finite numbers, got {_value_text(value)}")
        return float(value[0]), float(value[1])

    def random_state(self, entry, apply, text):
        try:
            value = json.loads(str(text))
            for state in value if isinstance(value, list) else [value]:
                if not isinstance(state, dict):
                    raise TypeError(f"expected a generator state (a JSON object), got {_brief(state)}")
                if state.get("has_uint32", 0) not in (0, 1) or not 0 <= state.get("uinteger", 0) < 2 ** 32:
                    raise ValueError(f"has_uint32 {state.get('has_uint32')!r} / uinteger {state.get('uinteger')!r} "
                                     "out of range")
            apply(value)
        except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
            self.fail(entry, f"is not a valid random generator state ({type(exc).__name__}: {exc})")

    def history(self, text, epochs, steps):
        """The history's per-epoch lists (``epochs`` entries each, or none for the accuracies
        not measured) and per-step losses (``steps``), as lists of numbers."""
        try:
            history = json.loads(str(text))
        except json.JSONDecodeError as exc:
            self.fail("history", f"is not JSON ({exc})")
        if not isinstance(history, dict):
            self.fail("history", f"must be a JSON object, got {type(history).__name__}")
        for key in _HISTORY_LISTS:
            values = history.get(key)
            if not isinstance(values, list) or not all(_is_number(v) for v in values):
                self.fail("history", f"must hold a list of numbers {key!r}, got {_brief(values)}")
            expected = steps if key == "train_loss_list" else epochs
            optional = key in ("train_acc_list", "val_acc_list", "test_acc_list")
            if len(values) != expected and not (optional and not values):
                self.fail("history", f"{key!r} has {len(values)} entries, expected {expected}")
            if key.endswith("acc_list") and not all(0 <= v <= 1 for v in values):
                self.fail("history", f"{key!r} holds an accuracy outside [0, 1]")
            if key in ("lr_list", "epoch_times") and not all(math.isfinite(v) and v >= 0 for v in values):
                self.fail("history", f"{key!r} must hold finite numbers >= 0")
        return history


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_text(value):
    return repr(value.item()) if value.shape == () else f"an array of shape {value.shape} ({value.dtype})"


def _entries(state, prefix):
    """The entries of ``state`` named ``prefix...``, with the prefix removed."""
    return {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
