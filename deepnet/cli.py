"""``deepnet`` command line (also ``python -m deepnet``).

``deepnet train`` with no options reproduces the book's ``ch08/train_deepnet.py``;
``deepnet evaluate --half-check`` is its ``half_float_network.py`` and
``deepnet misclassified`` its ``misclassified_mnist.py`` (figure 8-2).  ``--recipe beyond``
goes past the book (chapter 8.1.2); ``deepnet ensemble`` trains several members and
``deepnet evaluate --params a.npz b.npz ...`` averages their probabilities.
"""
import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
import zipfile

import numpy as np

__all__ = ["main", "build_parser"]

DTYPES = ("float16", "float32", "float64")
PLOT_INSTALL_HINT = 'this command needs matplotlib: pip install ".[plot]" in deepnet\'s source directory (or pip install matplotlib)'
FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
BOOK_EVALUATION_SAMPLES = 1000  # the book's evaluate_sample_num_per_epoch
# Bounds of the numeric options: far beyond any sensible run, well inside what the arithmetic takes.
MAX_EPOCHS = 1_000_000
MAX_IMAGES = 100_000_000
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_SEED = 2 ** 128 - 1
MAX_THREADS = 1024
MAX_MEMBERS = 1000
MAX_SHOWN = 10_000
VALIDATION_SHARE = 10  # a recipe's --val-size is at most 1/VALIDATION_SHARE of the training images


class CommandError(Exception):
    """A mistake of the user's (bad option, missing file...): one line on stderr, no traceback."""


# Errors that come from the user's input or environment, not from a bug in deepnet.
USER_ERRORS = (CommandError, OSError, ValueError, EOFError,
               pickle.UnpicklingError, zipfile.BadZipFile)


def main(argv=None):
    """Run the command line; return the exit code (0 on success)."""
    parser = build_parser()
    args = argparse.Namespace()
    try:
        args = parser.parse_args(argv)
        code = args.command(args)  # None, or an exit code for a command that reported its errors
    except USER_ERRORS as exc:
        return _fail(args, f"error: {_one_line(exc)}", 2 if isinstance(exc, CommandError) else 1)
    except MemoryError:  # each command's own advice (predict and serve have no --batch-size)
        hint = getattr(args, "memory_hint", "try a smaller --batch-size (or fewer images)")
        return _fail(args, f"error: out of memory; {hint}", 1)
    except KeyboardInterrupt:
        return _fail(args, f"interrupted{getattr(args, 'interrupt_hint', '')}", 130)
    except SystemExit as exc:  # --help and --version
        return exc.code
    except BaseException:
        communicator = getattr(args, "communicator", None)
        if communicator is not None and communicator.size > 1:
            import traceback
            traceback.print_exc()
            communicator.abort(1)  # a bug on one rank must not leave the others waiting
        raise
    return code or 0


def _fail(args, message, code):
    """Report on stderr; with several MPI ranks, end all of them (the others would wait forever)."""
    communicator = getattr(args, "communicator", None)
    several = communicator is not None and communicator.size > 1
    print(f"deepnet{f' (rank {communicator.rank})' if several else ''}: {message}", file=sys.stderr, flush=True)
    if several:
        communicator.abort(code)
    return code


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the parser ----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Raises CommandError instead of printing usage and exiting, so main() reports it."""

    def error(self, message):
        raise CommandError(message)


def build_parser():
    from ._version import __version__
    from .app.commands import add_predict, add_serve

    parser = _Parser(prog="deepnet", description="DeepConvNet on MNIST "
                     "(Deep Learning from Scratch, chapter 8).")
    parser.add_argument("--version", action="version", version=f"deepnet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_train(commands)
    _add_ensemble(commands)
    _add_evaluate(commands)
    _add_misclassified(commands)
    _add_plot(commands)
    add_predict(commands)
    add_serve(commands)
    return parser


def _add_training_options(p):
    from .recipes import RECIPES

    p.add_argument("--recipe", choices=tuple(RECIPES), default="book",
                   help="defaults for every option below: 'book' (ch08/train_deepnet.py, the default) or "
                        "'beyond' (the BN variant, augmentation, LR schedule, weight averaging, validation split)")
    p.add_argument("--model", metavar="NAME|SPEC.json",
                   help="deepconvnet (the book's), deepconvnet-bn, resnet, simpleconvnet, or a JSON spec file")
    p.add_argument("--epochs", type=_int_in(1, MAX_EPOCHS), help="epochs to train (book: 20)")
    p.add_argument("--batch-size", type=_int_in(1, MAX_IMAGES), help="mini-batch size; the global batch with "
                   "--distributed (book: 100)")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
                   help="update rule (book: adam)")
    p.add_argument("--lr", type=_float_between(0, MAX_LR, low_open=True), help="learning rate (book: 0.001)")
    p.add_argument("--weight-decay", type=_float_between(0, MAX_WEIGHT_DECAY), metavar="L2",
                   help="L2 weight decay on the weights (book: 0)")
    p.add_argument("--lr-schedule", type=_schedule_spec, metavar="NAME[:k=v,...]",
                   help="constant, step:every=5,gamma=0.5, exponential:gamma=0.9, cosine:min_lr=0, "
                        "one-cycle:pct=0.25 (book: constant); applied per step")
    p.add_argument("--warmup", type=_float_between(0, MAX_EPOCHS), metavar="EPOCHS",
                   help="linear learning-rate warmup over the first EPOCHS epochs")
    p.add_argument("--augment", type=_augment_spec, metavar="SPEC",
                   help="random transforms per batch, e.g. rotation=10,scale=0.1,shear=5,shift=2.5,"
                        "elastic=34:4 (degrees, fraction, degrees, pixels, alpha:sigma; see deepnet.augment); "
                        "'none' for none")
    p.add_argument("--ema", type=_decay, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights, e.g. 0.999")
    p.add_argument("--val-size", type=_int_in(0, MAX_IMAGES), metavar="N",
                   help="hold out N training images (stratified, seeded) and evaluate all of them every "
                        "epoch; the test set is then evaluated once, at the end (a recipe's value is capped "
                        "at 10%% of the training images)")
    p.add_argument("--select", choices=("last", "best-val"),
                   help="which weights to keep: the last epoch's or the best validation epoch's")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED),
                   help="seed for the weights, dropout, batch order, split, augmentation")
    p.add_argument("--train-size", type=_int_in(1, MAX_IMAGES), metavar="N",
                   help="train on the first N training images only (quick demos)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    _add_common(p, dtype_default="float32")


def _add_train(commands):
    p = commands.add_parser("train", help="train a network (default: the book's train_deepnet.py)")
    _add_training_options(p)
    p.add_argument("--out", default="deep_convnet_params.npz", metavar="MODEL.npz",
                   help="where to save the trained model (default %(default)s)")
    p.add_argument("--checkpoint", default="deep_convnet_checkpoint.npz", metavar="PATH",
                   help="checkpoint written (atomically) after every epoch (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the --out, --checkpoint and --history files of an earlier run (without this "
                        "or --resume, train refuses to overwrite them)")
    p.add_argument("--history", default="deep_convnet_history.json", metavar="PATH",
                   help="accuracy and loss history as JSON, for 'deepnet plot' (default %(default)s)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of mpiexec -n K (MPI, deepnet[mpi]); --batch-size is "
                        "the global batch, so the training computed is the same")
    p.set_defaults(command=run_train)


def _add_ensemble(commands):
    p = commands.add_parser("ensemble", help="train K members with different seeds, then evaluate "
                            "their averaged probabilities")
    p.add_argument("--members", type=_int_in(1, MAX_MEMBERS), required=True, metavar="K",
                   help="number of members to train (seeds --seed, --seed + 1, ...; default seed 0)")
    p.add_argument("--out-dir", default="ensemble", metavar="DIR",
                   help="member models, checkpoints, histories and the report (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue unfinished members from their checkpoints")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier ensemble's files in --out-dir (without this or --resume, "
                        "ensemble refuses to overwrite them)")
    _add_training_options(p)
    p.set_defaults(command=run_ensemble)


def _add_evaluate(commands):
    p = commands.add_parser("evaluate", help="test accuracy on all 10,000 test images")
    p.add_argument("--params", required=True, nargs="+", type=_existing_file, metavar="FILE",
                   help="a saved model (deepnet train), a parameter .npz or the book's .pkl; several "
                        "files are evaluated as an ensemble (averaged softmax probabilities)")
    p.add_argument("--half-check", action="store_true",
                   help="compare float64, float32 and float16 (the book's half_float_network.py)")
    _add_common(p, dtype_default="float32")
    p.set_defaults(command=run_evaluate)


def _add_misclassified(commands):
    p = commands.add_parser("misclassified", help="figure of misclassified test digits (fig. 8-2)")
    p.add_argument("--params", required=True, type=_existing_file, metavar="FILE",
                   help="a saved model (deepnet train), a parameter .npz or the book's .pkl")
    p.add_argument("--out", required=True, metavar="FILE.png", help="the figure (.png, .pdf or .svg)")
    p.add_argument("--max", type=_int_in(1, MAX_SHOWN), default=20,
                   help="show at most this many misclassified digits (default %(default)s)")
    _add_common(p, dtype_default="float32")
    p.set_defaults(command=run_misclassified)


def _add_plot(commands):
    p = commands.add_parser("plot", help="accuracy and loss curves of a training history")
    p.add_argument("--history", required=True, type=_existing_file, metavar="FILE.json",
                   help="a training history written by 'deepnet train --history' (or an ensemble member's)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="the figure (.png, .pdf or .svg)")
    p.set_defaults(command=run_plot)


def _add_common(p, dtype_default):
    p.add_argument("--dtype", choices=DTYPES, default=dtype_default, help="floating-point type (default %(default)s)")
    p.add_argument("--data", metavar="DIR", help="directory holding the MNIST files (only there)")
    p.add_argument("--backend", choices=("cython", "numpy"),
                   help="CPU kernels: compiled (cython) or the NumPy reference")
    p.add_argument("--threads", type=_int_in(1, MAX_THREADS), metavar="N", help="threads for the kernels")


def _int_in(low, high):
    """An argparse type: an integer in [low, high]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"expected {what} (at most {high:,}), got {text!r}")
        return value
    parse.__name__ = "integer"
    return parse


_positive_int = _int_in(1, MAX_IMAGES)  # deepnet.app's --threads uses it


def _float_between(low, high, low_open=False):
    """An argparse type: a finite number in [low, high] ((low, high] with low_open)."""
    bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
    return lambda text: _float_in(text, lambda v: (v > low if low_open else v >= low) and v <= high,
                                  f"a finite number {bounds}")


def _augment_spec(text):
    """--augment, checked now (keys, numbers, bounds) rather than at the first batch."""
    from .augment import Augment

    try:
        Augment.from_spec(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("deepnet.augment.Augment.from_spec", "")
                                         .replace("deepnet.augment.Augment: ", "").lstrip(": ")) from None
    return text


def _schedule_spec(text):
    """--lr-schedule, checked now (name, settings, bounds; min_lr against --lr comes later)."""
    from .schedules import parse

    try:
        parse(text, lr=MAX_LR, steps_per_epoch=1, epochs=1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("Schedule: ", "")) from None
    return text


def _float_in(text, ok, what):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _decay(text):
    return _float_in(text, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")


def _existing_file(path):
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file not found: {path!r}")
    return path


# -- training ------------------------------------------------------------------------------

def run_train(args):
    started = time.perf_counter()
    settings = _training_settings(args)
    outputs = {"--out": args.out, "--checkpoint": args.checkpoint, "--history": args.history}
    if not args.checkpoint:
        raise CommandError("--checkpoint needs a PATH (every epoch is checkpointed)")
    from .distributed import mpi_world_size

    if not args.distributed and mpi_world_size() > 1:  # each rank would train alone, into the same files
        raise CommandError(f"mpiexec started {mpi_world_size()} ranks, but without --distributed each would "
                           "train alone into the same files: add --distributed to every rank")
    args.communicator = _communicator(args.distributed)
    _check_ranks_agree(args)
    root = args.communicator.is_root
    _refuse_to_overwrite(args, outputs.items(), "train")
    if args.seed is None and args.communicator.size > 1:  # one seed for all ranks: rank 0's
        args.seed = args.communicator.broadcast_object(int(np.random.SeedSequence().entropy) if root else None)
    if root:
        _check_writable(outputs)
    _configure_kernels(args)
    args.interrupt_hint = _interrupt_hint(args.checkpoint, None, resume=args.resume)
    data = _training_data(args, settings)
    model, _, epoch_times = _train_one(args, settings, data, args.seed, args.checkpoint, args.history,
                                       communicator=args.communicator)
    if not root:
        return
    path = model.save(args.out)
    print(f"saved the model to {path}")
    per_epoch = (f"; {np.mean(epoch_times):.1f} s per epoch (training and the per-epoch evaluation), "
                 f"{_count(len(epoch_times), 'epoch')}" if epoch_times else "; no epoch to train")
    print(f"wall time: {time.perf_counter() - started:.1f} s in all (setup, training and evaluation){per_epoch}")


def _refuse_to_overwrite(args, outputs, command):
    """No silent overwrite: outputs of an earlier run are replaced only with --overwrite
    (or continued with --resume).  Rank 0 looks and tells the others."""
    comm = args.communicator
    problem = None
    if comm.is_root and not (args.resume or args.overwrite):
        existing = [(option, path) for option, path in outputs if path and os.path.exists(path)]
        if existing:
            options = sorted({option for option, _ in existing})
            shown = ", ".join(path for _, path in existing[:3]) + (f" and {len(existing) - 3} more files"
                                                                  if len(existing) > 3 else "")
            problem = (f"{shown} already exist{'s' if len(existing) == 1 else ''} "
                       f"({', '.join(options)} of an earlier run): continue that run with --resume, "
                       f"replace {'it' if len(existing) == 1 else 'them'} with --overwrite, or choose other "
                       f"{'paths' if command == 'train' else 'a directory'}")
    problem = comm.broadcast_object(problem)
    if problem:
        raise CommandError(problem)


def _interrupt_hint(checkpoint, written, previous=0, resume=False):
    """What Ctrl-C leaves, said as it is: ``written``, the last epoch this run checkpointed
    (None: none yet); ``previous``, the epoch of the checkpoint it resumed from (0: none)."""
    again = "run the same command with --resume to continue"
    if written:
        return f"; the checkpoint after epoch {written} is {checkpoint}: {again}"
    if previous:
        return (f"; no epoch finished in this run: {checkpoint} still holds the checkpoint after epoch "
                f"{previous}: {again}")
    if resume and os.path.exists(checkpoint):
        return f"; no epoch finished in this run: {checkpoint} is as it was: {again}"
    earlier = " (the file there is an earlier run's)" if os.path.exists(checkpoint) else ""
    return (f"; no epoch finished, so this run wrote no checkpoint to {checkpoint}{earlier}: "
            "run the same command to start over")


def _ensemble_interrupt_hint(args, finished, member=None, checkpoint=None):
    """What Ctrl-C leaves of an ensemble (on this rank): the finished members, and the
    interrupted member's checkpoint if it wrote one."""
    written = getattr(args, "interrupted_checkpoint_epoch", None) if member is not None else None
    parts = [f"{_count(len(finished), 'member')} finished in {args.out_dir}"
             + (f" (member{', member'.join(map(str, finished))})" if finished else "")]
    if written:
        parts.append(f"member {member}'s checkpoint after epoch {written} is {checkpoint}")
    if finished or written or args.resume:
        return "; " + "; ".join(parts) + ": run the same command with --resume to continue"
    return f"; {parts[0]} and no checkpoint was written: run the same command to start over"


def _check_ranks_agree(args):
    """Every setting that changes the sequence of collective calls (and the training) must be
    the same on every rank (mpiexec's MPMD form can start ranks with other options); else the
    ranks would wait for each other forever or exchange mismatched messages."""
    comm = args.communicator
    if comm.size == 1:
        return
    # Not options, or per host: where the MNIST files are, how many cores.
    exempt = {"command", "communicator", "interrupt_hint", "interrupted_checkpoint_epoch", "data", "threads"}
    differences = comm.differences({"--" + name.replace("_", "-"): value for name, value in vars(args).items()
                                    if name not in exempt})
    if differences:
        raise CommandError(f"the MPI ranks were started with different options ({differences}): "
                           "start every rank with the same ones")


def _count(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _training_settings(args):
    """The recipe's defaults, overridden by the options given."""
    from .recipes import RECIPES

    settings = dict(RECIPES[args.recipe])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["augment"] in ("none", ""):
        settings["augment"] = None
    if settings["select"] == "best-val" and not settings["val_size"]:
        raise CommandError("--select best-val needs a validation split: --val-size N")
    from .schedules import parse as parse_schedule

    try:  # with this run's --lr (cosine's min_lr <= lr), before any data is read
        parse_schedule(settings["lr_schedule"], settings["lr"], 1, settings["epochs"], settings["warmup"])
    except ValueError as exc:
        raise CommandError(f"--lr-schedule {settings['lr_schedule']}: {str(exc).replace('Schedule: ', '')}") from None
    settings["val_size_from_recipe"] = args.val_size is None
    return settings


def _training_data(args, settings):
    """(x_train, t_train, x_test, t_test) as the options ask."""
    (x_train, t_train), (x_test, t_test) = _load_mnist(args.data, np.dtype(args.dtype))
    if args.train_size:
        x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
    from_recipe = settings.pop("val_size_from_recipe", False)
    if from_recipe and settings["val_size"] > len(x_train) // VALIDATION_SHARE:
        recipe_value = settings["val_size"]
        settings["val_size"] = max(1, len(x_train) // VALIDATION_SHARE)
        communicator = getattr(args, "communicator", None)
        if communicator is None or communicator.is_root:
            print(f"--val-size {settings['val_size']}: the recipe's {recipe_value} validation images, capped at "
                  f"{100 // VALIDATION_SHARE}% of the {len(x_train)} training images (give --val-size to choose)")
    if settings["val_size"] >= len(x_train):
        source = f" (recipe {args.recipe}'s value)" if from_recipe else ""
        raise CommandError(f"--val-size {settings['val_size']}{source} leaves no training images: there are "
                           f"{len(x_train)} training images")
    return x_train, t_train, x_test, t_test


def _train_one(args, settings, data, seed, checkpoint, history, quiet=False, communicator=None):
    """Build and train one model; return it, the seconds taken and this run's epoch times."""
    from .datasets import stratified_split
    from .optimizers import get_optimizer
    from .recipes import make_model
    from .schedules import parse as parse_schedule
    from .trainer import Trainer, WeightAverage, batch_starts

    x_train, t_train, x_test, t_test = data
    x_val = t_val = None
    # Independent streams for the initial weights/dropout, the batch order (and the
    # augmentation, drawn by the trainer) and the validation split; the first two as in
    # every earlier version.
    network_seed, trainer_seed, split_seed = np.random.SeedSequence(seed).spawn(3)
    if settings["val_size"]:
        train_index, val_index = stratified_split(t_train, settings["val_size"], split_seed)
        x_val, t_val = x_train[val_index], t_train[val_index]
        x_train, t_train = x_train[train_index], t_train[train_index]
    dtype = np.dtype(args.dtype)
    model = make_model(settings["model"], dtype, network_seed)
    if args.device == "cuda":
        _require_gpu()
        model.to_gpu()
    steps_per_epoch = len(batch_starts(len(x_train), settings["batch_size"], bool(model.batch_norm_layers())))
    schedule = parse_schedule(settings["lr_schedule"], settings["lr"], steps_per_epoch, settings["epochs"],
                              settings["warmup"])
    hooks = [schedule] + ([WeightAverage(settings["ema"])] if settings["ema"] else [])
    transform = None
    if settings["augment"]:
        from .augment import Augment
        transform = Augment.from_spec(settings["augment"])
    optimizer = get_optimizer(settings["optimizer"], lr=settings["lr"], weight_decay=settings["weight_decay"])
    root = communicator is None or communicator.is_root
    if not quiet and root:
        print(_describe(settings, model, len(x_train), x_val, dtype, args.device, schedule, transform))
    trainer = Trainer(model, x_train, t_train, x_test, t_test, epochs=settings["epochs"],
                      mini_batch_size=settings["batch_size"], optimizer=optimizer,
                      evaluate_sample_num_per_epoch=None if x_val is not None else BOOK_EVALUATION_SAMPLES,
                      verbose=not quiet, seed=trainer_seed, checkpoint_path=checkpoint,
                      history_path=history, resume=args.resume, x_val=x_val, t_val=t_val,
                      select=settings["select"], hooks=hooks, batch_transform=transform,
                      communicator=communicator)
    first_epoch = trainer.epoch
    start = time.perf_counter()
    try:
        trainer.train()
    except KeyboardInterrupt:
        args.interrupt_hint = _interrupt_hint(checkpoint, trainer.checkpoint_epoch, first_epoch, args.resume)
        args.interrupted_checkpoint_epoch = trainer.checkpoint_epoch or first_epoch or None
        raise
    return model, time.perf_counter() - start, trainer.epoch_times[first_epoch:]


def _describe(settings, model, train_size, x_val, dtype, device, schedule, transform):
    parts = [f"{settings['model']} ({sum(p.size for p in model.params.values()):,} parameters) on "
             f"{train_size} training images", _count(settings["epochs"], "epoch"),
             f"batch {settings['batch_size']}", f"{settings['optimizer']} lr {settings['lr']:g}"]
    if settings["weight_decay"]:
        parts.append(f"weight decay {settings['weight_decay']:g}")
    if schedule.name != "constant" or schedule.warmup:
        parts.append(f"schedule {schedule!r}")
    if transform is not None:
        parts.append(f"augment {settings['augment']}")
    if settings["ema"]:
        parts.append(f"weight average {settings['ema']:g}")
    if x_val is not None:
        parts.append(f"{len(x_val)} validation images, keep {settings['select']}")
    parts += [dtype.name, device]
    return ", ".join(parts)


def run_ensemble(args):
    """Train the members (under mpiexec, rank r trains members r, r + K, ...), then rank 0
    evaluates each and the ensemble on the test set."""
    from .distributed import mpi_world_size

    settings = _training_settings(args)
    args.communicator = _communicator(mpi_world_size() > 1)
    comm = args.communicator
    _check_ranks_agree(args)
    files = [os.path.join(args.out_dir, f"member{member}{suffix}") for member in range(args.members)
             for suffix in (".npz", ".checkpoint.npz", ".history.json")] + [os.path.join(args.out_dir, "report.json")]
    _refuse_to_overwrite(args, [("--out-dir", path) for path in files], "ensemble")
    os.makedirs(args.out_dir, exist_ok=True)
    _check_writable({"--out-dir": os.path.join(args.out_dir, "report.json")})
    _configure_kernels(args)
    data = _training_data(args, settings)
    base_seed = 0 if args.seed is None else args.seed
    seconds = {}
    finished = []
    args.interrupt_hint = _ensemble_interrupt_hint(args, finished)
    for member in range(comm.rank, args.members, comm.size):
        stem = os.path.join(args.out_dir, f"member{member}")
        print(f"--- member {member + 1}/{args.members} (seed {base_seed + member})"
              + (f" on rank {comm.rank}" if comm.size > 1 else ""), flush=True)
        try:
            model, seconds[member], _ = _train_one(args, settings, data, base_seed + member,
                                                   stem + ".checkpoint.npz", stem + ".history.json",
                                                   quiet=comm.size > 1)
        except KeyboardInterrupt:
            args.interrupt_hint = _ensemble_interrupt_hint(args, finished, member, stem + ".checkpoint.npz")
            raise
        model.save(stem + ".npz")
        finished.append(member)
        args.interrupt_hint = _ensemble_interrupt_hint(args, finished)
    gathered = comm.gather(seconds)  # also waits for every rank's members
    if not comm.is_root:
        return
    seconds = {member: value for part in gathered for member, value in part.items()}
    paths = [os.path.join(args.out_dir, f"member{member}.npz") for member in range(args.members)]
    networks = [_load_network(path, args.dtype) for path in paths]
    (_, _), (x_test, t_test) = _load_mnist(args.data, np.dtype(args.dtype))
    report = _ensemble_report(paths, networks, args.dtype, x_test, t_test)
    report["training_seconds"] = [seconds[member] for member in range(args.members)]
    report["settings"] = settings
    from .io import atomic_write
    with atomic_write(os.path.join(args.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {os.path.join(args.out_dir, 'report.json')}")


# -- evaluation ----------------------------------------------------------------------------

def run_evaluate(args):
    _configure_kernels(args)
    if args.half_check and len(args.params) > 1:
        raise CommandError("--half-check compares dtypes of one network: give one --params file")
    dtype = "float64" if args.half_check else args.dtype
    networks = [_load_network(path, dtype) for path in args.params]  # a bad file fails before MNIST loads
    (_, _), (x_test, t_test) = _load_mnist(args.data, np.dtype(dtype))
    if len(args.params) > 1:
        _ensemble_report(args.params, networks, args.dtype, x_test, t_test)
        return
    network = networks[0]
    print(f"test accuracy on {len(x_test)} images ({args.params[0]}):")
    for dtype in (DTYPES[::-1] if args.half_check else (args.dtype,)):
        accuracy = network.astype(dtype).accuracy(x_test.astype(dtype), t_test)
        print(f"  {dtype:8s} {accuracy:.4f}")


def _ensemble_report(paths, networks, dtype, x_test, t_test):
    """Each member's test accuracy and the accuracy of their averaged probabilities
    (``networks``: the members, loaded from ``paths``)."""
    probabilities, members = None, []
    x = x_test.astype(dtype, copy=False)
    for path, network in zip(paths, networks):
        p = network.probabilities(x)
        members.append({"file": os.fspath(path), "accuracy": float(np.mean(p.argmax(axis=1) == t_test))})
        probabilities = p if probabilities is None else probabilities + p
    accuracy = float(np.mean(probabilities.argmax(axis=1) == t_test))
    print(f"test accuracy on all {len(x_test)} test images (evaluated once per model):")
    for member in members:
        print(f"  {member['accuracy']:.4f}  {member['file']}")
    print(f"  {accuracy:.4f}  ensemble of {len(paths)} (averaged softmax probabilities)")
    return {"members": members, "ensemble_accuracy": accuracy, "test_images": len(x_test)}


def run_misclassified(args):
    Figure = _figure_class()  # fail early if matplotlib is missing
    figure_format = _figure_format(args.out)
    _check_writable({"--out": args.out})
    _configure_kernels(args)
    network = _load_network(args.params, args.dtype)
    (_, _), (x_test, t_test) = _load_mnist(args.data, network.dtype)
    predicted = network.classify(x_test)
    wrong = np.flatnonzero(predicted != t_test)
    shown = wrong[:args.max]
    print(f"{len(wrong)} of {len(t_test)} test images misclassified; showing {len(shown)}")
    print("index: (label, inference)")
    print({int(i): (int(t_test[i]), int(predicted[i])) for i in shown})
    figure = _misclassified_figure(Figure, x_test, t_test, predicted, shown)
    _save_figure(figure, args.out, figure_format)
    print(f"wrote {args.out}")


def run_plot(args):
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator

    figure_format = _figure_format(args.out)
    history = _read_history(args.history)
    figure = Figure(figsize=(10, 4), layout="tight")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for key, label, marker in (("train_acc_list", "train", "o"), ("val_acc_list", "validation", "^"),
                               ("test_acc_list", "test", "s")):
        values = history.get(key) or []
        if values:
            accuracy_axes.plot(np.arange(1, len(values) + 1), values, marker=marker, label=label)
    accuracy_axes.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0), title="accuracy")
    accuracy_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy_axes.legend(loc="lower right")
    loss_axes.plot(history["train_loss_list"], linewidth=0.8)
    # Measured on each mini-batch as trained: with dropout on (the book's net), so higher than
    # the loss of the network evaluated, next to its accuracy.
    dropout = " (with dropout)" if history.get("dropout", True) else ""
    loss_axes.set(xlabel="iterations", ylabel=f"mini-batch loss{dropout}", title=f"training loss{dropout}")
    _save_figure(figure, args.out, figure_format)
    print(f"wrote {args.out}")


# -- helpers -------------------------------------------------------------------------------

def _communicator(distributed):
    """MPI's ranks for --distributed (or an ensemble started by mpiexec), else one process."""
    from .distributed import MPICommunicator, SingleProcess

    if not distributed:
        return SingleProcess()
    try:
        return MPICommunicator()
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def _configure_kernels(args):
    import deepnet

    if args.backend:
        try:
            deepnet.set_backend(args.backend)
        except ImportError as exc:  # the compiled kernels are not built
            raise CommandError(str(exc)) from None
    from .distributed import SingleProcess

    communicator = getattr(args, "communicator", None) or SingleProcess()
    ranks = communicator.node_size if communicator.size > 1 else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = args.threads
    if threads is None and ranks > 1 and not os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, cores // ranks)  # share the cores between the ranks on this machine
    if threads:
        deepnet.set_num_threads(threads)
    if ranks * deepnet.get_num_threads() > cores and communicator.is_root:
        layout = f"{ranks} ranks x {deepnet.get_num_threads()}" if ranks > 1 else f"{deepnet.get_num_threads()}"
        print(f"deepnet: warning: {layout} threads on {cores} cores oversubscribe this machine; use --threads",
              file=sys.stderr)


def _require_gpu():
    from . import _cuda

    if not _cuda.gpu_available():
        raise CommandError("--device cuda: no usable GPU (needs CuPy and a CUDA device)")


def _check_writable(paths):
    """Fail now, not after a long run, if an output cannot be written."""
    for option, path in paths.items():
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise CommandError(f"{option} {path}: cannot write in {directory} ({exc.strerror or exc})") from None
        if os.path.isdir(path):
            raise CommandError(f"{option} {path}: is a directory")


def _load_mnist(root, dtype):
    from . import datasets

    if root is not None:
        directory = datasets.mnist_dir_in(root)
        if directory is None:
            raise CommandError(f"--data {root}: no MNIST files there (expected "
                               f"{', '.join(s + '[.gz]' for s in datasets.MNIST_FILES.values())})")
        root = str(directory)
    return datasets.load_mnist(normalize=True, flatten=False, one_hot_label=False, dtype=dtype, root=root)


def _load_network(path, dtype):
    """Any saved model (or parameter file) for inference, refusing parameters that could
    only give meaningless predictions."""
    from .nets import load_model

    network = load_model(path, dtype=np.dtype(dtype))
    for name, value in network.named_arrays().items():
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: {name!r} holds NaN or infinite values (a diverged run?)")
    return network


def _read_history(path):
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{path}: not a training history (not JSON: {exc})") from None
    if not isinstance(history, dict):
        raise CommandError(f"{path}: not a training history (not a JSON object)")
    for key in ("train_acc_list", "train_loss_list"):
        if not isinstance(history.get(key), list):
            raise CommandError(f"{path}: not a training history (no {key!r})")
    return history


def _figure_class():
    """matplotlib's Figure, imported only now: plotting is an optional extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(PLOT_INSTALL_HINT) from None
    return Figure


def _figure_format(path):
    extension = os.path.splitext(path)[1].lower()
    if extension not in FIGURE_FORMATS:
        raise CommandError(f"--out {path}: the figure's extension must be one of {', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[extension]


def _misclassified_figure(Figure, images, labels, predicted, indices, columns=5):
    rows = max(1, math.ceil(len(indices) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), layout="tight")
    if len(indices) == 0:
        figure.text(0.5, 0.5, "no misclassified test images", ha="center")
    for position, i in enumerate(indices, 1):
        axes = figure.add_subplot(rows, columns, position, xticks=[], yticks=[])
        axes.imshow(images[i].reshape(images.shape[-2:]), cmap="gray_r", interpolation="nearest")
        axes.set_title(f"true {labels[i]}, pred {predicted[i]}", fontsize=9)
    return figure


def _save_figure(figure, path, figure_format):
    """Render with the Agg backend (no display needed) and write the file atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .io import atomic_write

    FigureCanvasAgg(figure)
    with atomic_write(path) as f:
        figure.savefig(f, format=figure_format, dpi=100)

