"""Training loop of the book's ``common/trainer.py``, with shuffled epochs and checkpoints.

Each epoch visits every training sample once, in an order drawn from a seeded Generator
(the last, smaller batch included). After each epoch the trainer records train and test
accuracy and, if asked, writes the history as JSON and a checkpoint from which
``resume`` continues bit-exactly: same seed, same parameters as an uninterrupted run.
"""
import json
import os
import time

import numpy as np
from tqdm import tqdm

from . import _cuda, io
from .optimizers import get_optimizer

__all__ = ["Trainer"]


class Trainer:
    """Trains ``network`` with mini-batch gradient descent.

    ``network`` is a deepnet net (DeepConvNet, SimpleConvNet): it has ``params``,
    ``loss_and_gradient``, ``accuracy``, ``set_params`` and ``rng`` (its dropout masks).
    ``checkpoint_path``: saved after every epoch; with ``resume=True`` training continues
    from it when it exists (and starts afresh when it does not yet).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test,
                 epochs=20, mini_batch_size=100,
                 optimizer="Adam", optimizer_param={"lr": 0.001},
                 evaluate_sample_num_per_epoch=None, verbose=True, seed=None,
                 checkpoint_path=None, history_path=None, resume=False):
        self.network = network
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.optimizer = get_optimizer(optimizer, **optimizer_param)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.rng = np.random.default_rng(seed)
        self.checkpoint_path = checkpoint_path
        self.history_path = history_path

        self.epoch = 0  # epochs completed so far
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.epoch_times = []  # wall-clock seconds of each epoch (training + evaluation)

        if resume:
            self._resume_if_possible()

    # -- training ----------------------------------------------------------------------

    def train(self):
        """Train for the remaining epochs; return the accuracy on the whole test set."""
        for epoch in range(self.epoch, self.epochs):
            start = time.perf_counter()
            self._train_epoch(epoch)
            self._evaluate()
            self.epoch_times.append(time.perf_counter() - start)
            self.epoch = epoch + 1
            self._report_epoch()
            self._save_history()
            self._save_checkpoint()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print(f"test acc: {test_acc:.4f} ({len(self.x_test)} images)")
        return test_acc

    def _train_epoch(self, epoch):
        order = self.rng.permutation(len(self.x_train))
        with _progress_bar(len(order), f"epoch {epoch + 1}/{self.epochs}", self.verbose) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                loss = self.train_step(self.x_train[batch], self.t_train[batch])
                bar.update(len(batch))
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def train_step(self, x_batch, t_batch):
        """One optimizer step on one mini-batch; returns (and records) its loss."""
        loss, grads = self.network.loss_and_gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        loss = float(loss)
        self.train_loss_list.append(loss)
        return loss

    def _evaluate(self):
        n = self.evaluate_sample_num_per_epoch  # None: every sample
        accuracy = self.network.accuracy
        self.train_acc_list.append(accuracy(self.x_train[:n], self.t_train[:n]))
        self.test_acc_list.append(accuracy(self.x_test[:n], self.t_test[:n]))

    def _report_epoch(self):
        if self.verbose:
            print(f"epoch {self.epoch}/{self.epochs}: train acc {self.train_acc_list[-1]:.4f}, "
                  f"test acc {self.test_acc_list[-1]:.4f}, {self.epoch_times[-1]:.1f} s")

    # -- history and checkpoints -------------------------------------------------------

    def history(self):
        """The per-epoch and per-iteration records, as plain (JSON-ready) Python lists."""
        return {
            "epochs_done": self.epoch,
            "train_loss_list": self.train_loss_list,
            "train_acc_list": self.train_acc_list,
            "test_acc_list": self.test_acc_list,
            "epoch_times": self.epoch_times,
        }

    def _save_history(self):
        if self.history_path:
            with io.atomic_write(self.history_path, "w") as f:
                json.dump(self.history(), f, indent=1)

    def _save_checkpoint(self):
        if not self.checkpoint_path:
            return
        params = self.network.params
        arrays = {f"param/{name}": _cuda.to_cpu(value) for name, value in params.items()}
        arrays.update({f"optimizer/{name}": value
                       for name, value in self.optimizer.state_dict().items()})
        arrays["trainer_rng"] = json.dumps(self.rng.bit_generator.state)
        arrays["network_rng"] = json.dumps(self.network.rng.bit_generator.state)
        arrays["epoch"] = self.epoch
        arrays["history"] = json.dumps(self.history())
        arrays["config"] = json.dumps(self._config())
        with io.atomic_write(self.checkpoint_path) as f:
            np.savez(f, **arrays)

    def _config(self):
        """Settings that must match for a resumed run to continue the same run."""
        return {"optimizer": type(self.optimizer).__name__, "mini_batch_size": self.batch_size,
                "train_size": len(self.x_train)}

    def resume(self, checkpoint_path=None):
        """Restore parameters, optimizer, RNGs, epoch and history from a checkpoint."""
        path = checkpoint_path or self.checkpoint_path
        with np.load(path, allow_pickle=False) as archive:
            state = {name: archive[name] for name in archive.files}
        if "config" not in state:
            raise ValueError(f"{path} is not a deepnet training checkpoint")
        self._check_config(json.loads(str(state["config"])), path)
        self.network.set_params(_entries(state, "param/"), source=path)
        self.optimizer.load_state_dict(_entries(state, "optimizer/"))
        self.rng.bit_generator.state = json.loads(str(state["trainer_rng"]))
        # Set in place: the network's dropout layers hold this same Generator.
        self.network.rng.bit_generator.state = json.loads(str(state["network_rng"]))
        self.epoch = int(state["epoch"])
        history = json.loads(str(state["history"]))
        self.train_loss_list = history["train_loss_list"]
        self.train_acc_list = history["train_acc_list"]
        self.test_acc_list = history["test_acc_list"]
        self.epoch_times = history["epoch_times"]
        return self

    def _check_config(self, saved, path):
        current = self._config()
        for key, value in saved.items():
            if current[key] != value:
                raise ValueError(f"checkpoint {path} was made with {key}={value}, "
                                 f"this run has {key}={current[key]}")

    def _resume_if_possible(self):
        if not self.checkpoint_path:
            raise ValueError("resume=True needs a checkpoint_path")
        if os.path.exists(self.checkpoint_path):
            self.resume()
            if self.verbose:
                print(f"resumed from {self.checkpoint_path} after epoch {self.epoch}")
        elif self.verbose:
            print(f"no checkpoint at {self.checkpoint_path} yet: starting from epoch 1")


def _progress_bar(total, description, enabled):
    """A tqdm bar counting images, so its rate reads images/s."""
    return tqdm(total=total, desc=description, unit="img", unit_scale=True,
                disable=not enabled, leave=False, dynamic_ncols=True)


def _entries(state, prefix):
    """The entries of ``state`` named ``prefix...``, with the prefix removed."""
    return {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
