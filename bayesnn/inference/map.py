"""Point estimates: maximum a posteriori training with any optax optimiser.

The objective per example is ``-(log p(θ) / N + mean_i log p(y_i | x_i, θ) / T)``: the
negative log posterior divided by N, so its scale matches the usual mean training loss
and the prior acts as weight decay. Keras vocabulary: ``optimizer``, ``epochs``,
``batch_size``, ``validation_split``, ``save_best_only``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesnn import serialization
from bayesnn.bnn import BNN
from bayesnn.chunks import map_rows
from bayesnn.data import (
    Augment,
    Dataset,
    augment_batch,
    check_batch_size,
    epoch_batches,
    num_batches,
    validation_split,
)
from bayesnn.inference.base import check_positive
from bayesnn.inference.driver import (
    STEPS_PER_EPOCH_CHUNK,
    latest_epoch,
    run_chunks,
    scan_minibatches,
)
from bayesnn.inference.programs import program_key
from bayesnn.inference.sharding import shard_chains, to_host
from bayesnn.posterior import Posterior
from bayesnn.tree import save_tree
from bayesnn.validation import LearningRate, Optimizer, check_range, check_types, config

__all__ = [
    "MAP", "MAPState", "Members", "OPTIMIZERS", "Tracker", "evaluate", "make_optimizer",
    "map_epoch", "train_members",
]

# name -> (optax constructor, default learning rate as in Keras)
OPTIMIZERS = {
    "sgd": (optax.sgd, 1e-2),
    "rmsprop": (optax.rmsprop, 1e-3),
    "adagrad": (optax.adagrad, 1e-2),
    "adadelta": (optax.adadelta, 1.0),
    "adam": (optax.adam, 1e-3),
    "adamax": (optax.adamax, 2e-3),
    "nadam": (optax.nadam, 2e-3),
}


def make_optimizer(optimizer, learning_rate=None) -> optax.GradientTransformation:
    """An optax transformation from a Keras optimiser name, or ``optimizer`` itself."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; use one of {sorted(OPTIMIZERS)} "
            "or pass an optax.GradientTransformation"
        )
    make, default_lr = OPTIMIZERS[optimizer.lower()]
    return make(default_lr if learning_rate is None else learning_rate)


class MAPState(NamedTuple):
    """Weights, optimiser state and the network's batch statistics (``BNN.stats``; None:
    the model's own)."""

    position: Any
    opt_state: Any
    stats: Any = None


def _objective(model: BNN, position, stats, batch, key, data_size: int):
    """Negative log posterior per example; the batch's network outputs and the batch
    statistics updated by it (batch norm in training mode)."""
    f, stats = model.apply_train(position, stats, batch.x, key)
    ll = model.likelihood.log_prob(f, batch.y, position["lik"])
    mask = jnp.ones_like(ll, bool) if batch.mask is None else batch.mask
    b = jnp.maximum(mask.sum(), 1)
    mean_ll = jnp.where(mask, ll, 0.0).sum() / b / model.likelihood.temperature
    return -(model.logprior_fn(position) / data_size + mean_ll), (f, stats)


def _batch_metric(model: BNN, f, y, lik_params) -> jax.Array:
    """Per-example accuracy (classification) or squared error (regression)."""
    stats = model.likelihood.draw_stats(f, lik_params)
    if model.likelihood.task == "classification":
        return (jnp.argmax(stats["probs"], -1) == y).astype(f.dtype)
    return jnp.sum((stats["mean"] - y) ** 2, axis=-1)


def map_epoch(model: BNN, tx, batch_size: int, state: MAPState, key, x, y, augment=None):
    """One epoch of shuffled minibatch steps; returns per-step loss, metric and batch size.

    ``augment`` (a :class:`bayesnn.data.Augment`) transforms each minibatch's images.
    Batch statistics (``state.stats``) are updated at every step.
    """
    if state.stats is None:
        state = state._replace(stats=model.stats)
    n = x.shape[0]
    k_batches, k_steps = jax.random.split(key)
    batches = epoch_batches(k_batches, n, batch_size)

    def step(state, k, batch):
        if augment is not None:
            k, k_aug = jax.random.split(k)
            batch = augment_batch(augment, k_aug, batch)
        (loss, (f, stats)), grads = jax.value_and_grad(_objective, argnums=1, has_aux=True)(
            model, state.position, state.stats, batch, k, n
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.position)
        metric = jnp.where(batch.mask, _batch_metric(model, f, batch.y, state.position["lik"]), 0)
        new = MAPState(optax.apply_updates(state.position, updates), opt_state, stats)
        return new, {"loss": loss, "metric": metric.sum(), "count": batch.mask.sum()}

    return scan_minibatches(step, state, k_steps, batches, (x, y))


def evaluate(model: BNN, position, x, y, batch_size: int = 4096,
             stats=None) -> dict[str, float]:
    """Mean untempered NLL and accuracy or RMSE of one position on ``(x, y)``, with batch
    statistics ``stats`` (default ``model.stats``)."""
    stats = model.stats if stats is None else stats
    nll, metric = map_rows(partial(_eval_rows, model, position, stats), (x, y), batch_size)
    name = _metric_name(model)
    metric = float(np.mean(metric))
    return {"nll": float(np.mean(nll)), name: metric if name == "accuracy" else metric**0.5}


@partial(jax.jit, static_argnums=0)
def _eval_rows(model: BNN, position, stats, x, y):
    f = model.apply(position, x, stats=stats)
    ll = model.likelihood.log_prob(f, y, position["lik"])
    return -ll, _batch_metric(model, f, y, position["lik"])


def _metric_name(model: BNN) -> str:
    return "accuracy" if model.likelihood.task == "classification" else "rmse"


@config
@dataclass(frozen=True)
class MAP:
    """Maximum a posteriori weights (a point-estimate network).

    Batch norm (``nnx.BatchNorm``) trains in training mode, its running statistics
    updated at every step; the posterior's model holds those of the returned weights
    (``post.model.stats``, see :meth:`~bayesnn.BNN.with_stats`), used in evaluation mode
    by prediction and by any method fitted to ``post.model``.

    Parameters
    ----------
    optimizer : str or optax.GradientTransformation
        One of ``sgd, rmsprop, adagrad, adadelta, adam, adamax, nadam`` or any optax
        transformation.
    learning_rate : float or optax schedule, optional
        Default: Keras' default for the named optimiser.
    epochs : int
        Passes over the training data.
    batch_size : int or None
        Minibatch size (None: full batch). The last partial batch of an epoch is used.
    validation_split : float
        Fraction of the examples, taken from the end as in Keras, held out for validation.
    save_best_only : bool
        Return the weights of the epoch with the lowest validation loss (training loss
        when there is no validation split) instead of the last epoch's.
    early_stopping_patience : int, optional
        Stop after this many epochs without improvement.
    checkpoint_path : str, optional
        Write the best weights there (``.npz``, see :func:`bayesnn.tree.load_tree`).
    augment : bayesnn.data.Augment, optional
        Random image transformations applied to every training minibatch, inside the
        jitted loop, each step with its own key.
    """

    optimizer: Any = "adam"
    learning_rate: Any = None
    epochs: int = 100
    batch_size: int | None = 32
    validation_split: float = 0.0
    save_best_only: bool = True
    early_stopping_patience: int | None = None
    checkpoint_path: str | None = None
    augment: Augment | None = None

    def __post_init__(self):
        check_types(self, optimizer=Optimizer, learning_rate=LearningRate)
        make_optimizer(self.optimizer, self.learning_rate)
        check_batch_size(self.batch_size, sys.maxsize)  # sign; size is checked at fit
        check_positive(epochs=self.epochs, early_stopping_patience=self.early_stopping_patience)
        if not callable(self.learning_rate):
            check_positive(learning_rate=self.learning_rate)
        check_range("validation_split", self.validation_split, 0, 1, closed="left")

    def run(self, model: BNN, data: Dataset, key, *, progress=None, checkpoint=None) -> Posterior:
        first = partial(jax.tree.map, lambda a: a[0])
        path = self.checkpoint_path
        fitted = train_members(
            self, model, data, key[None], jax.tree.map(lambda a: a[None], model.init_position),
            save=(lambda best: save_tree(path, first(best))) if path else None, desc="MAP",
            progress=progress, checkpoint=checkpoint,
        )
        state, tracker = first(fitted.carry)
        ran = fitted.history.pop("ran")[:, 0]
        position, stats = ((tracker.best_position, tracker.best_stats) if self.save_best_only
                           else (state.position, state.stats))
        if model.stats:
            model = model.with_stats(stats)
        info = {
            "history": {k: [float(v) for v in h[ran, 0]] for k, h in fitted.history.items()},
            "best_epoch": int(tracker.best_epoch), "epochs_run": int(tracker.epoch),
            "seconds": fitted.seconds, "interrupted": fitted.interrupted,
        }
        return Posterior(model, jax.tree.map(lambda a: a[None, None], position), self, info)


class Members(NamedTuple):
    """What :func:`train_members` returns."""

    carry: tuple  # (MAPState, Tracker), each leaf with a leading member axis
    history: dict  # name -> (epochs, members) rows, and "ran": which member ran which epoch
    seconds: float
    interrupted: bool


def train_members(
    method: MAP, model: BNN, data: Dataset, keys, positions, *, save=None, desc="MAP",
    progress=None, checkpoint=None,
) -> Members:
    """Train networks in parallel (vmapped), member ``m`` from ``positions[m]``.

    Member ``m`` follows exactly the run of ``method`` started at ``positions[m]`` with
    key ``keys[m]``: :class:`MAP` is one member, :class:`~bayesnn.Ensemble` many. Early
    stopping stops the run once every member has stopped. ``save(best_positions)`` is
    called whenever a member's best weights change; ``checkpoint`` goes to
    :func:`~bayesnn.inference.driver.run_chunks`. The carry holds each member's batch
    statistics, but a :class:`~bayesnn.BNN` holds one set, so networks with batch
    statistics train one member at a time.
    """
    if model.stats and len(keys) > 1:
        raise ValueError(
            f"{desc} trains {len(keys)} networks at once, but the network "
            f"{model.network_name} has batch statistics (nnx.BatchStat, e.g. nnx.BatchNorm) "
            "and a model holds one set of them: fit it with MAP or MCDropout, or use a "
            "network without batch norm (e.g. nnx.LayerNorm instead)"
        )
    train, val = (data, None) if not method.validation_split else validation_split(
        data, method.validation_split
    )
    x, y = jnp.asarray(train.x), jnp.asarray(train.y)
    val = None if val is None else (jnp.asarray(val.x), jnp.asarray(val.y))
    batch_size = check_batch_size(method.batch_size, x.shape[0])
    tx = make_optimizer(method.optimizer, method.learning_rate)
    steps = num_batches(x.shape[0], batch_size)
    per_chunk = max(1, min(method.epochs, STEPS_PER_EPOCH_CHUNK // steps))
    train_epoch = partial(
        _train_epoch, model, tx, batch_size, method.epochs, method.early_stopping_patience,
        method.augment,
    )

    def member_chunk(carry, key, x, y, val):
        keys = jax.random.split(key, per_chunk)
        return jax.lax.scan(lambda c, k: train_epoch(c, k, x, y, val), carry, keys)

    def chunk(carry, _, chunk_index, x, y, val, keys):
        # Each member folds the chunk index into its own key, as run_chunks does for one.
        keys = jax.vmap(jax.random.fold_in, (0, None))(keys, chunk_index)
        carry, rows = jax.vmap(member_chunk, (0, 0, None, None, None))(carry, keys, x, y, val)
        return carry, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), rows)

    saved = {"epochs": None}

    def after_chunk(_, carry, out):
        tracker = carry[1]
        best_epochs, stopped = to_host((tracker.best_epoch, tracker.stopped))
        if save is not None and not np.array_equal(best_epochs, saved["epochs"]):
            best = to_host(tracker.best_position)  # on every process, written by one
            if serialization.is_writer():
                save(best)
            saved["epochs"] = best_epochs
        return bool(np.all(stopped))

    def init(position):
        return MAPState(position, tx.init(position), model.stats), Tracker(
            position, jnp.asarray(_WORST, jnp.result_type(float)), -1, 0, False, model.stats
        )

    result = run_chunks(
        chunk, shard_chains(jax.vmap(init)(positions)), keys[0], -(-method.epochs // per_chunk),
        x, y, val, keys, steps_per_chunk=per_chunk * steps, callback=after_chunk, desc=desc,
        progress=progress, checkpoint=checkpoint, hint="try a smaller learning_rate",
        cache_key=program_key(method, model), metrics=latest_epoch,
    )
    names = _history_names(model, val) + ["ran"]
    rows = (
        jax.tree.map(lambda *a: np.concatenate(a), *result.outputs) if result.outputs
        else {k: np.zeros((0, len(keys)), bool if k == "ran" else np.float32) for k in names}
    )
    return Members(result.state, rows, result.seconds, result.interrupted)


_WORST = float(np.finfo(np.float32).max)  # finite "no best yet", so the state stays finite


class Tracker(NamedTuple):
    """Best-epoch bookkeeping carried through the jitted loop (Keras' ``save_best_only`` and
    ``EarlyStopping``)."""

    best_position: Any
    best_loss: jax.Array
    best_epoch: jax.Array
    epoch: jax.Array
    stopped: jax.Array
    best_stats: Any = None  # the batch statistics that go with best_position


def _track(tracker: Tracker, position, stats, monitored, epochs: int,
           patience: int | None) -> Tracker:
    """Keep ``position`` and ``stats`` if ``monitored`` improved; stop after ``epochs`` or
    ``patience``."""
    better = monitored < tracker.best_loss
    best_epoch = jnp.where(better, tracker.epoch, tracker.best_epoch)
    stop = tracker.epoch + 1 >= epochs
    if patience is not None:
        stop |= tracker.epoch - best_epoch >= patience
    keep = partial(jax.tree.map, lambda b, p: jnp.where(better, p, b))
    return Tracker(
        keep(tracker.best_position, position), jnp.where(better, monitored, tracker.best_loss),
        best_epoch, tracker.epoch + 1, stop, keep(tracker.best_stats, stats),
    )


def _train_epoch(model, tx, batch_size, epochs, patience, augment, carry, key, x, y, val):
    """One epoch and its history row; a no-op once the run has stopped."""
    metric = _metric_name(model)

    def finish(mean_metric):
        return mean_metric if metric == "accuracy" else jnp.sqrt(mean_metric)

    def train(carry):
        state, tracker = carry
        state, out = map_epoch(model, tx, batch_size, state, key, x, y, augment)
        count = out["count"].sum()
        row = {
            "loss": jnp.sum(out["loss"] * out["count"]) / count,
            metric: finish(out["metric"].sum() / count),
        }
        if val is not None:
            nll, m = _eval_rows(model, state.position, state.stats, *val)
            row.update({"val_loss": nll.mean(), f"val_{metric}": finish(m.mean())})
        monitored = row["val_loss"] if val is not None else row["loss"]
        tracker = _track(tracker, state.position, state.stats, monitored, epochs, patience)
        return (state, tracker), {**row, "ran": jnp.bool_(True)}

    def skip(carry):
        names = _history_names(model, val)
        zero = jnp.zeros((), jnp.result_type(float))
        return carry, {**{k: zero for k in names}, "ran": jnp.bool_(False)}

    return jax.lax.cond(carry[1].stopped, skip, train, carry)


def _history_names(model: BNN, val) -> list[str]:
    names = ["loss", _metric_name(model)]
    return names + [f"val_{k}" for k in names] if val is not None else names
