"""``deepnet train`` and ``deepnet ensemble``, with the training settings they share.

``deepnet train`` with no options reproduces the book's ``ch08/train_deepnet.py``;
``--recipe beyond`` goes past the book (chapter 8.1.2). ``deepnet ensemble`` trains several
members (under mpiexec, one per rank) and evaluates their averaged probabilities.
"""

import json
import os
import time

import numpy as np

from . import common
from .evaluate import ensemble_report, load_network
from .options import (
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_LR,
    MAX_MEMBERS,
    MAX_SEED,
    MAX_WEIGHT_DECAY,
    CommandError,
    RanksDisagree,
    add_common,
    augment_spec,
    decay,
    float_between,
    int_in,
    one_line,
    schedule_spec,
)

__all__ = ["add_train", "add_ensemble", "run_train", "run_ensemble"]

BOOK_EVALUATION_SAMPLES = 1000  # the book's evaluate_sample_num_per_epoch
VALIDATION_SHARE = 10  # a recipe's --val-size is at most 1/VALIDATION_SHARE of the training images


def _add_training_options(p):
    from ..recipes import RECIPES

    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="book",
        help="defaults for every option below: 'book' (ch08/train_deepnet.py, the default) or "
        "'beyond' (the BN variant, augmentation, LR schedule, weight averaging, validation split)",
    )
    p.add_argument(
        "--model",
        metavar="NAME|SPEC.json",
        help="deepconvnet (the book's), deepconvnet-bn, resnet, simpleconvnet, or a JSON spec file",
    )
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), help="epochs to train (book: 20)")
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_IMAGES),
        help="mini-batch size; the global batch with --distributed (book: 100)",
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
        help="update rule (book: adam)",
    )
    p.add_argument("--lr", type=float_between(0, MAX_LR, low_open=True), help="learning rate (book: 0.001)")
    p.add_argument(
        "--weight-decay",
        type=float_between(0, MAX_WEIGHT_DECAY),
        metavar="L2",
        help="L2 weight decay on the weights (book: 0)",
    )
    p.add_argument(
        "--lr-schedule",
        type=schedule_spec,
        metavar="NAME[:k=v,...]",
        help="constant, step:every=5,gamma=0.5, exponential:gamma=0.9, cosine:min_lr=0, "
        "one-cycle:pct=0.25 (book: constant); applied per step",
    )
    p.add_argument(
        "--warmup",
        type=float_between(0, MAX_EPOCHS),
        metavar="EPOCHS",
        help="linear learning-rate warmup over the first EPOCHS epochs",
    )
    p.add_argument(
        "--augment",
        type=augment_spec,
        metavar="SPEC",
        help="random transforms per batch, e.g. rotation=10,scale=0.1,shear=5,shift=2.5,"
        "elastic=34:4 (degrees, fraction, degrees, pixels, alpha:sigma; see deepnet.augment); "
        "'none' for none",
    )
    p.add_argument(
        "--ema",
        type=decay,
        metavar="DECAY",
        help="evaluate and save an exponential moving average of the weights, e.g. 0.999",
    )
    p.add_argument(
        "--val-size",
        type=int_in(0, MAX_IMAGES),
        metavar="N",
        help="hold out N training images (stratified, seeded) and evaluate all of them every "
        "epoch; the test set is then evaluated once, at the end (a recipe's value is capped "
        "at 10%% of the training images)",
    )
    p.add_argument(
        "--select",
        choices=("last", "best-val"),
        help="which weights to keep: the last epoch's or the best validation epoch's",
    )
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), help="seed for the weights, dropout, batch order, split, augmentation"
    )
    p.add_argument(
        "--train-size",
        type=int_in(1, MAX_IMAGES),
        metavar="N",
        help="train on the first N training images only (quick demos)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    add_common(p, dtype_default="float32")


def add_train(commands):
    p = commands.add_parser("train", help="train a network (default: the book's train_deepnet.py)")
    _add_training_options(p)
    p.add_argument(
        "--out",
        default="deep_convnet_params.npz",
        metavar="MODEL.npz",
        help="where to save the trained model (default %(default)s)",
    )
    p.add_argument(
        "--checkpoint",
        default="deep_convnet_checkpoint.npz",
        metavar="PATH",
        help="checkpoint written (atomically) after every epoch (default %(default)s)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the --out, --checkpoint and --history files of an earlier run (without this "
        "or --resume, train refuses to overwrite them)",
    )
    p.add_argument(
        "--history",
        default="deep_convnet_history.json",
        metavar="PATH",
        help="accuracy and loss history as JSON, for 'deepnet plot' (default %(default)s)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec -n K (MPI, deepnet[mpi]); --batch-size is "
        "the global batch, so the training computed is the same",
    )
    p.set_defaults(command=run_train)


def add_ensemble(commands):
    p = commands.add_parser(
        "ensemble", help="train K members with different seeds, then evaluate their averaged probabilities"
    )
    p.add_argument(
        "--members",
        type=int_in(1, MAX_MEMBERS),
        required=True,
        metavar="K",
        help="number of members to train (seeds --seed, --seed + 1, ...; default seed 0)",
    )
    p.add_argument(
        "--out-dir",
        default="ensemble",
        metavar="DIR",
        help="member models, checkpoints, histories and the report (default %(default)s)",
    )
    p.add_argument("--resume", action="store_true", help="continue unfinished members from their checkpoints")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier ensemble's files in --out-dir (without this or --resume, "
        "ensemble refuses to overwrite them)",
    )
    _add_training_options(p)
    p.set_defaults(command=run_ensemble)


def run_train(args):
    started = time.perf_counter()
    settings = _training_settings(args)
    outputs = {"--out": args.out, "--checkpoint": args.checkpoint, "--history": args.history}
    if not args.checkpoint:
        raise CommandError("--checkpoint needs a PATH (every epoch is checkpointed)")
    from ..distributed import mpi_world_size

    if not args.distributed and mpi_world_size() > 1:  # each rank would train alone, into the same files
        raise CommandError(
            f"mpiexec started {mpi_world_size()} ranks, but without --distributed each would "
            "train alone into the same files: add --distributed to every rank"
        )
    args.communicator = _communicator(args.distributed)
    _check_ranks_agree(args)
    root = args.communicator.is_root
    _refuse_to_overwrite(args, outputs.items(), "train")
    if args.seed is None and args.communicator.size > 1:  # one seed for all ranks: rank 0's
        args.seed = args.communicator.broadcast_object(int(np.random.SeedSequence().entropy) if root else None)
    if root:
        common.check_writable(outputs)
    common.configure_kernels(args)
    args.interrupt_hint = _interrupt_hint(args.checkpoint, None, resume=args.resume)
    data = _training_data(args, settings)
    model, _, epoch_times = _train_one(
        args, settings, data, args.seed, args.checkpoint, args.history, communicator=args.communicator
    )
    if not root:
        return
    path = model.save(args.out)
    print(f"saved the model to {path}")
    per_epoch = (
        f"; {np.mean(epoch_times):.1f} s per epoch (training and the per-epoch evaluation), "
        f"{common.count(len(epoch_times), 'epoch')}"
        if epoch_times
        else "; no epoch to train"
    )
    print(f"wall time: {time.perf_counter() - started:.1f} s in all (setup, training and evaluation){per_epoch}")


def run_ensemble(args):
    """Train the members (under mpiexec, rank r trains members r, r + K, ...), then rank 0
    evaluates each and the ensemble on the test set."""
    from ..distributed import mpi_world_size

    settings = _training_settings(args)
    args.communicator = _communicator(mpi_world_size() > 1)
    comm = args.communicator
    _check_ranks_agree(args)
    files = [
        os.path.join(args.out_dir, f"member{member}{suffix}")
        for member in range(args.members)
        for suffix in (".npz", ".checkpoint.npz", ".history.json")
    ] + [os.path.join(args.out_dir, "report.json")]
    _refuse_to_overwrite(args, [("--out-dir", path) for path in files], "ensemble")
    os.makedirs(args.out_dir, exist_ok=True)
    common.check_writable({"--out-dir": os.path.join(args.out_dir, "report.json")})
    common.configure_kernels(args)
    data = _training_data(args, settings)
    base_seed = 0 if args.seed is None else args.seed
    seconds = {}
    finished = []
    args.interrupt_hint = _ensemble_interrupt_hint(args, finished)
    for member in range(comm.rank, args.members, comm.size):
        stem = os.path.join(args.out_dir, f"member{member}")
        print(
            f"--- member {member + 1}/{args.members} (seed {base_seed + member})"
            + (f" on rank {comm.rank}" if comm.size > 1 else ""),
            flush=True,
        )
        try:
            model, seconds[member], _ = _train_one(
                args,
                settings,
                data,
                base_seed + member,
                stem + ".checkpoint.npz",
                stem + ".history.json",
                quiet=comm.size > 1,
            )
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
    networks = [load_network(path, args.dtype) for path in paths]
    (_, _), (x_test, t_test) = common.load_mnist(args.data, np.dtype(args.dtype))
    report = ensemble_report(paths, networks, args.dtype, x_test, t_test)
    report["training_seconds"] = [seconds[member] for member in range(args.members)]
    report["settings"] = settings
    from ..io import atomic_write

    with atomic_write(os.path.join(args.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {os.path.join(args.out_dir, 'report.json')}")


def _communicator(distributed):
    """MPI's ranks for --distributed (or an ensemble started by mpiexec), else one process."""
    from ..distributed import MPICommunicator, SingleProcess

    if not distributed:
        return SingleProcess()
    try:
        return MPICommunicator()
    except ImportError as exc:
        raise CommandError(one_line(exc)) from None


def _refuse_to_overwrite(args, outputs, command):
    """No silent overwrite: outputs of an earlier run are replaced only with --overwrite
    (or continued with --resume).  Rank 0 looks and tells the others."""
    comm = args.communicator
    problem = None
    if comm.is_root and not (args.resume or args.overwrite):
        existing = [(option, path) for option, path in outputs if path and os.path.exists(path)]
        if existing:
            options = sorted({option for option, _ in existing})
            shown = ", ".join(path for _, path in existing[:3]) + (
                f" and {len(existing) - 3} more files" if len(existing) > 3 else ""
            )
            problem = (
                f"{shown} already exist{'s' if len(existing) == 1 else ''} "
                f"({', '.join(options)} of an earlier run): continue that run with --resume, "
                f"replace {'it' if len(existing) == 1 else 'them'} with --overwrite, or choose other "
                f"{'paths' if command == 'train' else 'a directory'}"
            )
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
        return (
            f"; no epoch finished in this run: {checkpoint} still holds the checkpoint after epoch {previous}: {again}"
        )
    if resume and os.path.exists(checkpoint):
        return f"; no epoch finished in this run: {checkpoint} is as it was: {again}"
    earlier = " (the file there is an earlier run's)" if os.path.exists(checkpoint) else ""
    return (
        f"; no epoch finished, so this run wrote no checkpoint to {checkpoint}{earlier}: "
        "run the same command to start over"
    )


def _ensemble_interrupt_hint(args, finished, member=None, checkpoint=None):
    """What Ctrl-C leaves of an ensemble (on this rank): the finished members, and the
    interrupted member's checkpoint if it wrote one."""
    written = getattr(args, "interrupted_checkpoint_epoch", None) if member is not None else None
    parts = [
        f"{common.count(len(finished), 'member')} finished in {args.out_dir}"
        + (f" (member{', member'.join(map(str, finished))})" if finished else "")
    ]
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
    differences = comm.differences(
        {"--" + name.replace("_", "-"): value for name, value in vars(args).items() if name not in exempt}
    )
    if differences:
        raise RanksDisagree(
            f"the MPI ranks were started with different options ({differences}): start every rank with the same ones"
        )


def _training_settings(args):
    """The recipe's defaults, overridden by the options given."""
    from ..recipes import RECIPES

    settings = dict(RECIPES[args.recipe])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["augment"] in ("none", ""):
        settings["augment"] = None
    if settings["select"] == "best-val" and not settings["val_size"]:
        raise CommandError("--select best-val needs a validation split: --val-size N")
    from ..training.schedules import parse as parse_schedule

    try:  # with this run's --lr (cosine's min_lr <= lr), before any data is read
        parse_schedule(settings["lr_schedule"], settings["lr"], 1, settings["epochs"], settings["warmup"])
    except ValueError as exc:
        raise CommandError(f"--lr-schedule {settings['lr_schedule']}: {str(exc).replace('Schedule: ', '')}") from None
    settings["val_size_from_recipe"] = args.val_size is None
    return settings


def _training_data(args, settings):
    """(x_train, t_train, x_test, t_test) as the options ask."""
    (x_train, t_train), (x_test, t_test) = common.load_mnist(args.data, np.dtype(args.dtype))
    if args.train_size:
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    from_recipe = settings.pop("val_size_from_recipe", False)
    if from_recipe and settings["val_size"] > len(x_train) // VALIDATION_SHARE:
        recipe_value = settings["val_size"]
        settings["val_size"] = max(1, len(x_train) // VALIDATION_SHARE)
        communicator = getattr(args, "communicator", None)
        if communicator is None or communicator.is_root:
            print(
                f"--val-size {settings['val_size']}: the recipe's {recipe_value} validation images, capped at "
                f"{100 // VALIDATION_SHARE}% of the {len(x_train)} training images (give --val-size to choose)"
            )
    if settings["val_size"] >= len(x_train):
        source = f" (recipe {args.recipe}'s value)" if from_recipe else ""
        raise CommandError(
            f"--val-size {settings['val_size']}{source} leaves no training images: there are "
            f"{len(x_train)} training images"
        )
    return x_train, t_train, x_test, t_test


def _train_one(args, settings, data, seed, checkpoint, history, quiet=False, communicator=None):
    """Build and train one model; return it, the seconds taken and this run's epoch times."""
    from ..datasets import stratified_split
    from ..training.optimizers import get_optimizer
    from ..recipes import make_model
    from ..training.schedules import parse as parse_schedule
    from ..training import Trainer, WeightAverage, batch_starts

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
        common.require_gpu()
        model.to_gpu()
    steps_per_epoch = len(batch_starts(len(x_train), settings["batch_size"], bool(model.batch_norm_layers())))
    schedule = parse_schedule(
        settings["lr_schedule"], settings["lr"], steps_per_epoch, settings["epochs"], settings["warmup"]
    )
    hooks = [schedule] + ([WeightAverage(settings["ema"])] if settings["ema"] else [])
    transform = None
    if settings["augment"]:
        from ..training.augment import Augment

        transform = Augment.from_spec(settings["augment"])
    optimizer = get_optimizer(settings["optimizer"], lr=settings["lr"], weight_decay=settings["weight_decay"])
    root = communicator is None or communicator.is_root
    if not quiet and root:
        print(_describe(settings, model, len(x_train), x_val, dtype, args.device, schedule, transform))
    trainer = Trainer(
        model,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=settings["epochs"],
        mini_batch_size=settings["batch_size"],
        optimizer=optimizer,
        evaluate_sample_num_per_epoch=None if x_val is not None else BOOK_EVALUATION_SAMPLES,
        verbose=not quiet,
        seed=trainer_seed,
        checkpoint_path=checkpoint,
        history_path=history,
        resume=args.resume,
        x_val=x_val,
        t_val=t_val,
        select=settings["select"],
        hooks=hooks,
        batch_transform=transform,
        communicator=communicator,
    )
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
    parts = [
        f"{settings['model']} ({sum(p.size for p in model.params.values()):,} parameters) on "
        f"{train_size} training images",
        common.count(settings["epochs"], "epoch"),
        f"batch {settings['batch_size']}",
        f"{settings['optimizer']} lr {settings['lr']:g}",
    ]
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
