"""The training loop: ``sifa train``.

One update = ``optim.accumulate`` micro-batches on every process; the learning rate follows the
warm-up + cosine schedule per update. Every epoch ends with an optional validation (a single
cheap view per video unless configured otherwise), a line in ``metrics.jsonl`` and TensorBoard,
and the ``last`` checkpoint; a better validation top-1 also writes ``best``. Inside an epoch,
``last`` is also saved every ``checkpoint_minutes`` of training and every ``checkpoint_every``
updates, with the position inside the epoch. Ctrl-C or SIGTERM finish the current update,
write ``last`` and stop; ``resume`` continues from it with the same schedule and the same
remaining batch order. Only the main process writes files.

With ``data.mixup`` or ``data.cutmix`` on, every micro-batch is mixed on the device
(:class:`sifa.data.mixing.BatchMixer`) and the loss is taken on the soft targets; the training
top-1 still compares each clip's prediction with its own label from before mixing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sifa.data.loader import make_loader, set_epoch
from sifa.data.mixing import BatchMixer, mixing_generator
from sifa.engine import distributed
from sifa.engine.builders import (
    autocast_for,
    build_eval_set,
    build_model,
    build_optimizer,
    build_scheduler,
    build_train_set,
    updates_per_epoch,
)
from sifa.engine.checkpoint import (
    load_training_state,
    load_weights,
    remove_leftovers,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sifa.engine.config import ConfigError, to_yaml
from sifa.engine.evaluate import score_videos
from sifa.engine.metrics import topk_accuracy
from sifa.models import classification_loss

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    best_top1: float | None = None
    updates: int = 0
    interrupted: int | None = None  # the signal that stopped the run; 0: stop_after_updates


def make_deterministic() -> None:
    """Choose deterministic kernels for the rest of the process (``deterministic: true``):
    ``torch.use_deterministic_algorithms`` (an operation without a deterministic kernel then
    raises, naming itself; the SIFA operator's Triton backward sums the key gradient without
    atomics), cuDNN without autotuning, and oneDNN's deterministic mode on the CPU. cuBLAS
    needs ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts: set here if it is not."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.mkldnn.deterministic = True


class _StopRequest:
    """Remembers a Ctrl-C or SIGTERM instead of dying mid-update; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, number, frame) -> None:
        if self.signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = number
        name = signal.Signals(number).name
        logger.warning("%s: finishing this update, saving a checkpoint, stopping", name)

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught
            for number in STOP_SIGNALS:
                # A signal ignored when the process started (nohup, a background job of a
                # script) stays ignored, as the shell asked.
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class _MetricsLog:
    """``metrics.jsonl`` lines and TensorBoard scalars, written by the main process only.

    Starting at update ``start`` (a resumed run) drops what an earlier run logged after that
    update, so that the logs read as one uninterrupted run; a fresh run (``start`` 0) starts
    empty."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool, start: int) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if start and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if json.loads(line).get("update", 0) <= start]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed: only metrics.jsonl is written")
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start + 1)

    def write(self, record: dict, step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            kind = record["type"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "update"):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def validates_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether epoch ``epoch`` (from 1) of ``epochs`` ends with a validation: every
    ``eval_every``-th and the last (none with ``eval_every`` 0)."""
    return bool(eval_every) and (epoch % eval_every == 0 or epoch == epochs)


class Trainer:
    """A training run of ``config``; :meth:`fit` trains (or resumes) it to the end.

    ``dry_run``: build the run but neither check nor write ``output_dir`` (``sifa train
    --dry-run``, which times a few updates and never calls :meth:`fit`)."""

    def __init__(
        self,
        config: DictConfig,
        *,
        resume: str | Path | bool | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.closed = False
        self.group = distributed.setup(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            make_deterministic()
        self.output_dir = Path(config.output_dir)
        self.checkpoints = self.output_dir / "checkpoints"
        if config.data.train is None:
            raise ConfigError("the config has no data.train dataset to train on")
        torch.manual_seed(config.seed + self.group.rank)
        self._build_datasets()
        self.loader = make_loader(
            self.train_set,
            batch_size=config.data.batch_size,
            shuffle=True,
            seed=config.seed,
            num_workers=config.data.num_workers,
            drop_last=True,
            num_replicas=self.group.world_size,
            rank=self.group.rank,
        )

        self.mixer = None
        if config.data.mixup > 0 or config.data.cutmix > 0:
            self.mixer = BatchMixer(
                len(self.class_names),
                mixup_alpha=config.data.mixup,
                cutmix_alpha=config.data.cutmix,
                prob=config.data.mix_prob,
                switch_prob=config.data.mix_switch_prob,
            )

        model = build_model(config, len(self.class_names), self.class_names)
        no_gradient: list[str] | None = []  # None: DDP has to search at every update
        if self.group.enabled:  # probed before SyncBatchNorm, whose forward needs real data
            data = config.data
            clips = (data.batch_size, 3, data.clip_len, data.train_size, data.train_size)
            no_gradient = distributed.ddp_parameters_without_gradient(
                self.group, model, clips, classification_loss
            )
        if config.model.sync_batchnorm and self.group.enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.group.device)
        self.optimizer = build_optimizer(config, model)
        self.updates_per_epoch = updates_per_epoch(len(self.loader), config.optim.accumulate)
        self.scheduler = build_scheduler(config, self.optimizer, self.updates_per_epoch)
        use_scaler = config.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.group.device.type) if use_scaler else None
        self.model = model
        if self.group.enabled:
            on_gpu = self.group.device.type == "cuda"
            ids = [self.group.local_rank] if on_gpu else None
            # Frozen only now that the optimiser holds them: as in a single process, where
            # they never get a gradient, the optimiser skips them (no step, no weight decay).
            distributed.freeze_parameters(
                self.group, model, no_gradient or [], config.data.clip_len
            )
            self.model = DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=no_gradient is None
            )
            distributed.release_before_exit(self)
        self.epoch, self.next_batch, self.update = 0, 0, 0
        self.best_top1: float | None = None
        self.history: list[dict] = []
        self.epoch_sums = [0.0, 0.0, 0.0]  # loss * clips, correct, clips of the epoch so far
        if resume is True and not (self.checkpoints / "last.safetensors").is_file():
            raise ConfigError(
                f"nothing to resume in {self.output_dir}: no checkpoints/last.safetensors yet "
                "(start without --resume)"
            )
        if resume:
            self._restore(self.checkpoints / "last" if resume is True else Path(resume))
        elif not dry_run and (self.checkpoints / "last.safetensors").exists():
            raise ConfigError(
                f"output_dir {self.output_dir} already holds a run: continue it with --resume, "
                "or give another output_dir (or remove the folder) to start again"
            )
        self.log = _MetricsLog(
            self.output_dir,
            self.group.is_main and not dry_run,
            config.tensorboard,
            start=self.update,
        )

    # -- checkpoints -------------------------------------------------------------------------

    def _training_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "next_batch": self.next_batch,
            "best_top1": self.best_top1,
            "history": json.dumps(self.history),
            "epoch_sums": list(self.epoch_sums),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "world_size": self.group.world_size,
        }

    def _save(self, name: str, *, with_state: bool) -> None:
        if name == "last":
            self._last_saved = time.monotonic()
        if not self.group.is_main:
            return
        save_checkpoint(
            self.checkpoints,
            name,
            _unwrap(self.model),
            config_yaml=to_yaml(self.config),
            class_names=self.class_names,
            update=self.update,
            training_state=self._training_state() if with_state else None,
        )

    def _mid_epoch_save_due(self) -> bool:
        """Whether ``checkpoint_every`` or ``checkpoint_minutes`` asks for a save of ``last``
        now (right after an update)."""
        every, minutes = self.config.checkpoint_every, self.config.checkpoint_minutes
        if every and self.update % every == 0:
            return True
        return bool(minutes) and time.monotonic() - self._last_saved >= 60 * minutes

    def _build_datasets(self) -> None:
        """The training and validation sets, after every problem of the config that shows
        before the model is built is found: all of them in one error, so that a recipe is not
        mended one launch per problem."""
        config, group = self.config, self.group
        problems: list[str] = []

        def attempt(build):
            try:
                return build()
            except (ValueError, OSError) as error:  # config, annotation and file errors
                problems.append(str(error))
                return None

        try:
            autocast_for(config.precision, group.device)
        except ConfigError as error:
            problems.append(str(error))
        self.train_set = attempt(lambda: build_train_set(config, seed=config.seed))
        self.class_names = self.train_set.class_names if self.train_set is not None else None
        self.val_set = None
        if config.data.val is not None and config.eval_every:
            self.val_set = attempt(
                lambda: build_eval_set(
                    config,
                    "val",
                    clips=config.data.val_clips,
                    crops=config.data.val_crops,
                    class_names=self.class_names,
                )
            )
        # The loader drops a last partial batch: each process needs a whole batch.
        if (
            self.train_set is not None
            and math.ceil(len(self.train_set) / group.world_size) < config.data.batch_size
        ):
            problems.append(
                f"data.batch_size={config.data.batch_size} x {group.world_size} processes is "
                f"more than the {len(self.train_set)} training videos"
            )
        if len(problems) == 1:
            raise ConfigError(problems[0])
        if problems:
            listed = "; ".join(f"({n}) {problem}" for n, problem in enumerate(problems, 1))
            raise ConfigError(f"{len(problems)} problems with the config: {listed}")

    def _restore(self, checkpoint: Path) -> None:
        if self.group.is_main:
            for name in ("last", "best"):
                for leftover in remove_leftovers(self.checkpoints, name):
                    logger.info("removed %s, left by an interrupted save", leftover)
        path = resolve_checkpoint(checkpoint)
        state = load_training_state(path)
        weights, metadata = load_weights(path)
        if json.loads(metadata["class_names"]) != self.class_names:
            raise ConfigError(f"{path} was trained on other classes than data.train has")
        if state["world_size"] != self.group.world_size:
            raise ConfigError(
                f"{path} was written by {state['world_size']} processes, this run has "
                f"{self.group.world_size}: the batch order would differ"
            )
        _unwrap(self.model).load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.next_batch = state["epoch"], state["next_batch"]
        self.update, self.best_top1 = state["update"], state["best_top1"]
        self.history = json.loads(state["history"])
        self.epoch_sums = list(state["epoch_sums"])
        logger.info("resumed %s at epoch %d, batch %d", path, self.epoch + 1, self.next_batch)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, *, stop_after_updates: int | None = None) -> TrainResult:
        """Train to ``optim.epochs``; ``stop_after_updates`` stops (and saves) early, as a signal
        would."""
        if self.closed:
            raise RuntimeError("this Trainer is closed: build a new one (resume=True continues)")
        result = TrainResult(self.output_dir)
        self._last_saved = time.monotonic()
        if self.group.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(to_yaml(self.config))
        try:
            with _StopRequest() as stop:
                while self.epoch < self.config.optim.epochs:
                    stopped = self._train_epoch(stop, stop_after_updates)
                    if stopped is not None:
                        result.interrupted = stopped
                        break
                    self._finish_epoch()
        finally:
            self.log.close()
        result.history, result.best_top1, result.updates = (
            self.history,
            self.best_top1,
            self.update,
        )
        return result

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper (``model`` becomes the bare network) and
        close the log; :meth:`fit` refuses to run afterwards. Under ``torchrun`` a process must
        not exit with the wrapper alive (see :func:`sifa.engine.distributed.cleanup`, which
        calls this at exit for a trainer still open)."""
        self.model = _unwrap(self.model)
        self.log.close()
        self.closed = True

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _micro_batch(
        self, clips: torch.Tensor, labels: torch.Tensor, batch: int, *, quiet: bool = False
    ):
        """Forward and backward of micro-batch ``batch`` of the epoch (mixed where mixing is
        on; the loss scaled for accumulation and the grad scaler; ``quiet``: without DDP's
        gradient sync). Returns ``(output, loss, labels)``, the labels on the device."""
        config = self.config
        clips = clips.to(self.group.device, non_blocking=True)
        labels = labels.to(self.group.device, non_blocking=True)
        targets = labels
        if self.mixer is not None:
            # Its own generator per micro-batch: the global RNGs (dropout, DropPath, the
            # checkpoint's state) stay untouched, and a resumed epoch mixes as before.
            generator = mixing_generator(config.seed, self.epoch, self.group.rank, batch)
            mixed = self.mixer(clips, labels, generator=generator)
            clips, targets = mixed.clips, mixed.targets
        with self.model.no_sync() if quiet else contextlib.nullcontext():
            with autocast_for(config.precision, self.group.device):
                output = self.model(clips)
                loss = classification_loss(
                    output, targets, label_smoothing=config.optim.label_smoothing
                )
            scaled = loss / config.optim.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return output, loss, labels

    def _train_epoch(self, stop: _StopRequest, stop_after: int | None) -> int | None:
        """One epoch from ``self.next_batch``; the stop signal's number if it stopped early."""
        config = self.config
        accumulate = config.optim.accumulate
        set_epoch(self.loader, self.epoch)
        self.loader.sampler.set_start(self.next_batch * config.data.batch_size)
        batches = len(self.loader) + self.next_batch  # the whole epoch's micro-batches
        self.model.train()
        bar = tqdm(
            total=batches,
            initial=self.next_batch,
            desc=f"epoch {self.epoch + 1}/{config.optim.epochs}",
            unit="batch",
            disable=not (config.progress and self.group.is_main),
        )
        window = [0.0, 0, time.perf_counter()]  # loss sum, clips, start of the log window
        for batch, (clips, labels) in enumerate(self.loader, start=self.next_batch):
            last_micro = (batch + 1) % accumulate == 0 or batch + 1 == batches
            # Gradients are averaged across processes only on the update's last micro-batch.
            quiet = self.group.enabled and not last_micro
            output, loss, labels = self._micro_batch(clips, labels, batch, quiet=quiet)
            main_logits = output[0] if isinstance(output, tuple) else output
            size, value = labels.numel(), loss.item()
            # Training top-1 counts a clip right when it predicts the clip's own label (from
            # before mixing), even when mixup or cutmix blended in another clip.
            correct = (main_logits.argmax(-1) == labels).sum().item()
            self.epoch_sums = [
                a + b for a, b in zip(self.epoch_sums, (value * size, correct, size), strict=True)
            ]
            window[0] += value * size
            window[1] += size
            self.next_batch = batch + 1
            bar.update()
            if not last_micro:
                continue
            self._step()
            lr = self.scheduler.get_last_lr()[0]
            if self.update % config.log_every == 0:
                elapsed = time.perf_counter() - window[2]
                rate = window[1] * self.group.world_size / max(elapsed, 1e-9)
                record = {"type": "train", "epoch": self.epoch + 1, "update": self.update,
                          "loss": window[0] / window[1], "lr": lr, "clips_per_s": rate}  # fmt: skip
                self.log.write(record, self.update)
                if not config.progress and self.group.is_main:
                    print(json.dumps(record), flush=True)
                window = [0.0, 0, time.perf_counter()]
            rate = (bar.format_dict.get("rate") or 0) * config.data.batch_size
            bar.set_postfix(
                loss=f"{value:.3f}",
                lr=f"{lr:.2e}",
                clips_s=f"{rate * self.group.world_size:.1f}",
                refresh=False,
            )
            requested = stop.signal is not None
            requested |= stop_after is not None and self.update >= stop_after
            if distributed.any_process(self.group, requested):
                bar.close()
                self._save("last", with_state=True)
                return stop.signal or 0
            # The epoch's last update is followed by the epoch-end save anyway.
            if batch + 1 < batches and self._mid_epoch_save_due():
                self._save("last", with_state=True)
        bar.close()
        return None

    def _step(self) -> None:
        clip = self.config.optim.clip_grad_norm
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.update += 1

    def _finish_epoch(self) -> None:
        config = self.config
        loss_sum, correct, clips = distributed.sum_over_processes(self.group, *self.epoch_sums)
        skipped = int(distributed.sum_over_processes(self.group, self.train_set.skip_count)[0])
        self.train_set.reset_skips()
        record = {
            "type": "epoch",
            "epoch": self.epoch + 1,
            "update": self.update,
            "train_loss": loss_sum / max(clips, 1),
            "train_top1": correct / max(clips, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "train_unreadable_replaced": skipped,
        }
        epochs, every = config.optim.epochs, config.eval_every
        if self.val_set is not None and validates_after(self.epoch + 1, epochs, every):
            scored = score_videos(
                self.model,
                self.val_set,
                self.group,
                batch_size=config.data.val_batch_size,
                num_workers=config.data.num_workers,
                precision=config.precision,
            )
            top = topk_accuracy(scored.scores, scored.labels, ks=(1, 5))
            unreadable = scored.unreadable  # left out of the accuracies, never replaced
            record.update(val_top1=top[1], val_top5=top[5], val_unreadable=len(unreadable))
            if unreadable and self.group.is_main:
                logger.warning(
                    "epoch %d: %d unreadable validation videos left out of val_top1: %s",
                    self.epoch + 1,
                    len(unreadable),
                    "; ".join(f"{u.path} ({u.reason})" for u in unreadable),
                )
        self.history.append(record)
        self.log.write(record, self.update)
        if self.group.is_main:
            summary = ", ".join(
                f"{k} {v:.4g}" for k, v in record.items() if k not in ("type", "epoch", "update")
            )
            print(f"epoch {self.epoch + 1}/{config.optim.epochs}: {summary}", flush=True)
            if skipped:
                logger.warning(
                    "epoch %d: %d unreadable training videos replaced by others", self.epoch + 1,
                    skipped,
                )  # fmt: skip
        improved = "val_top1" in record and (
            self.best_top1 is None or record["val_top1"] > self.best_top1
        )
        if improved:
            self.best_top1 = record["val_top1"]
        self.epoch, self.next_batch, self.epoch_sums = self.epoch + 1, 0, [0.0, 0.0, 0.0]
        # best first: a run stopped between the two saves repeats this epoch from the previous
        # last, and its validation writes best again.
        if improved:
            self._save("best", with_state=False)
        self._save("last", with_state=True)


def train(
    config: DictConfig,
    *,
    resume: str | Path | bool | None = None,
    stop_after_updates: int | None = None,
) -> TrainResult:
    """Train ``config`` (see :class:`Trainer`)."""
    with Trainer(config, resume=resume) as trainer:
        return trainer.fit(stop_after_updates=stop_after_updates)
