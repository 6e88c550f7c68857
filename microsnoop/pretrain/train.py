"""The pretraining loop: type-balanced epochs, masking, AMP, DDP, exact resume, JSONL metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from microsnoop.config import AugmentConfig, EncoderConfig, PreprocessContract, PretrainConfig
from microsnoop.curate import load_pool_manifest, manifest_hash
from microsnoop.device import Runtime, distributed_session, init_runtime, precision_record
from microsnoop.errors import CheckpointError
from microsnoop.models.checkpoint import load_checkpoint, save_checkpoint
from microsnoop.models.masking import apply_mask, make_patch_mask
from microsnoop.models.unet import MicrosnoopUNet
from microsnoop.pretrain.data import VALIDATION_EPOCH, CropDataset, fixed_crops, load_planes, plan_epoch
from microsnoop.pretrain.probe import ProbeSet, encoder_of, load_probe, probe_scores
from microsnoop.pretrain.schedule import learning_rate

log = logging.getLogger(__name__)

# Settings that must not change between a run and its resumption.
TRAJECTORY_KEYS = (
    "nepoch",
    "warmup_epochs",
    "images_per_epoch",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "encoder",
    "preprocess",
    "mask",
    "augment",
    "crop_size",
)
# Nested settings added after the first checkpoints were written: a saved config without them used these.
_NESTED_DEFAULTS = {
    "encoder": EncoderConfig().to_dict(),
    "preprocess": PreprocessContract().to_dict(),
    "augment": dataclasses.asdict(AugmentConfig()),
}


@dataclass(frozen=True)
class ProbeConfig:
    """Which probe set to embed, how often (epochs), and with which embedding contract."""

    path: Path
    every: int = 5
    contract: PreprocessContract = PreprocessContract(canvas="crop", pooling="valid")
    k: int = 11


@dataclass(frozen=True)
class PretrainResult:
    """Where the run left its files and how far it got."""

    out_dir: Path
    last_checkpoint: Path
    encoder_checkpoint: Path
    epochs_done: int
    finished: bool


def _collate(batch: list[tuple[int, int, int]], dataset: CropDataset) -> torch.Tensor:
    return torch.stack([dataset[key] for key in batch])


class _BatchLoader:
    """Turns an epoch plan into crop batches, optionally in worker processes."""

    def __init__(self, dataset: CropDataset, num_workers: int) -> None:
        self.dataset = dataset
        self.num_workers = num_workers

    def batches(self, epoch: int, plan: list[list[int]], rank: int, world: int) -> DataLoader[Any]:
        keyed: list[list[tuple[int, int, int]]] = [
            [(epoch, b * 10_000 + j, idx) for j, idx in enumerate(batch)] for b, batch in enumerate(plan)
        ]
        # Each batch is one item: DistributedSampler hands every rank its share of whole batches.
        sampler: DistributedSampler[Any] = DistributedSampler(
            keyed,  # type: ignore[arg-type]
            num_replicas=world,
            rank=rank,
            shuffle=False,
            drop_last=world > 1,
        )
        return DataLoader(
            keyed,  # type: ignore[arg-type]
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=lambda b: _collate(b, self.dataset),
        )


def _mask_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, epoch, batch_index, 11]).generate_state(1)[0])
    )


def _batch_mask(target: torch.Tensor, config: PretrainConfig, epoch: int, index: int) -> torch.Tensor:
    """The patch mask of one batch, seeded by (run seed, epoch, batch index) so a resumed run draws the same."""
    return make_patch_mask(
        target.shape[0],
        target.shape[-2],
        target.shape[-1],
        config.mask,
        generator=_mask_generator(config.seed, epoch, index),
    )


def reconstruction_loss(
    model: torch.nn.Module, target: torch.Tensor, mask: torch.Tensor, runtime: Runtime
) -> torch.Tensor:
    """MSE between the reconstruction of the masked input and the whole target image."""
    masked = apply_mask(target, mask)
    with runtime.autocast():
        pred = model(runtime.to_input(masked))
    return F.mse_loss(pred.float(), target.to(pred.device).float())


def _check_resumable(
    saved: dict[str, Any], config: PretrainConfig, path: Path, *, saved_pool: str | None, pool_hash: str
) -> None:
    now = config.to_dict()
    filled = {
        k: {**_NESTED_DEFAULTS[k], **v} if k in _NESTED_DEFAULTS and isinstance(v, dict) else v
        for k, v in saved.items()
    }
    diffs = [k for k in TRAJECTORY_KEYS if filled.get(k) != now.get(k)]
    if saved_pool not in (None, pool_hash):
        raise CheckpointError(
            f"{path}: was trained on another pool (manifest hash {str(saved_pool)[:12]}, this pool "
            f"{pool_hash[:12]}); resume on the same --pool, or pass a new --out folder (or --no-resume)"
        )
    if diffs:
        raise CheckpointError(
            f"{path}: was trained with different settings for {diffs}; resume with the same arguments, "
            "or pass a new --out folder (or --no-resume) to start over"
        )


def pretrain(
    pool_dir: Path,
    out_dir: Path,
    config: PretrainConfig,
    *,
    device: str = "auto",
    resume: bool = True,
    time_budget_s: float | None = None,
    progress: bool = True,
    probe: ProbeConfig | None = None,
    init_from: Path | None = None,
) -> PretrainResult:
    """Train the U-Net to reconstruct masked crops of the pool; write checkpoints and metrics to ``out_dir``.

    ``init_from`` warm-starts a new run from another run's weights (fresh optimiser and schedule).
    """
    runtime = init_runtime(device=device, amp=config.amp, channels_last=config.channels_last)
    with distributed_session(runtime):
        return _pretrain(pool_dir, out_dir, config, runtime, resume, time_budget_s, progress, probe, init_from)


def _pretrain(
    pool_dir: Path,
    out_dir: Path,
    config: PretrainConfig,
    runtime: Runtime,
    resume: bool,
    time_budget_s: float | None,
    progress: bool,
    probe: ProbeConfig | None,
    init_from: Path | None,
) -> PretrainResult:
    manifest = load_pool_manifest(pool_dir)
    train_rows = manifest[manifest["split"] == "train"].reset_index(drop=True)
    val_rows = manifest[manifest["split"] == "val"].reset_index(drop=True)
    if train_rows.empty:
        raise ValueError(f"{pool_dir}: the pool has no 'train' planes; curate with val_fraction < 1")
    pool_hash = manifest_hash(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, enc_path = out_dir / "last.pt", out_dir / "encoder.pt"
    metrics_path = out_dir / "metrics.jsonl"
    probe_path = out_dir / "probe.jsonl"

    model, optimizer, scaler = _build(config, runtime)
    init_record = initial_weights(model, init_from) if init_from is not None else None
    start_epoch = 0
    if resume and last_path.is_file():
        start_epoch = _restore(last_path, model, optimizer, scaler, config, pool_hash=pool_hash, init=init_record)
    elif runtime.is_main:
        metrics_path.unlink(missing_ok=True)
        probe_path.unlink(missing_ok=True)
    ddp_model = _distributed(model, runtime)

    planes = load_planes(pool_dir, train_rows, config.preprocess, progress=progress and runtime.is_main)
    val_planes = load_planes(pool_dir, val_rows, config.preprocess, progress=False)
    dataset = CropDataset(planes, size=config.train_crop, augment=config.augment, seed=config.seed)
    val_crops = fixed_crops(val_planes, size=config.train_crop, augment=config.augment, seed=config.seed, limit=64)
    probe_set = load_probe(probe.path) if probe is not None and runtime.is_main else None
    loader = _BatchLoader(dataset, config.num_workers)
    types = train_rows["type"].to_numpy()
    provenance = {
        "pool_manifest_hash": pool_hash,
        "pool_dir": str(pool_dir),
        "seed": config.seed,
        "n_train_planes": len(train_rows),
        "types": sorted(set(types.tolist())),
        "config": config.to_dict(),
        "precision": precision_record(runtime),
        "init_from": init_record,
    }
    if probe_set is not None and probe is not None and start_epoch == 0:
        _log_probe(probe_path, model, probe_set, probe, config, runtime, epoch=-1)  # the starting point

    last_epoch = config.nepoch - 1
    if config.max_epochs_this_run is not None:  # stop early this call; the next call resumes
        last_epoch = min(last_epoch, start_epoch + config.max_epochs_this_run - 1)
    t_run = time.perf_counter()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, last_epoch + 1):
        lr = _set_lr(optimizer, config, epoch)
        plan = plan_epoch(
            types, images_per_epoch=config.images_per_epoch, batch_size=config.batch_size, seed=config.seed, epoch=epoch
        )
        losses, seen, seconds = _train_epoch(
            ddp_model, loader, plan, optimizer, scaler, config, runtime, epoch, progress
        )
        val_loss = evaluate_loss(model, val_crops, config, runtime) if len(val_crops) else None
        if runtime.is_main:
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "images": seen * runtime.world_size,
                "seconds": round(seconds, 3),
                "img_per_s": round(seen * runtime.world_size / seconds, 3),
            }
            _append_jsonl(metrics_path, record)
            log.info("epoch %d: %s", epoch, record)
            if probe_set is not None and probe is not None and (epoch + 1) % probe.every == 0:
                _log_probe(probe_path, model, probe_set, probe, config, runtime, epoch=epoch)
            if epoch == last_epoch or (epoch + 1) % config.checkpoint_every == 0:
                _save_all(model, optimizer, scaler, config, provenance, epoch, last_path, enc_path)
        out_of_time = _agree(time_budget_s is not None and time.perf_counter() - t_run > time_budget_s, runtime)
        if out_of_time and epoch < last_epoch:
            if runtime.is_main:
                _save_all(model, optimizer, scaler, config, provenance, epoch, last_path, enc_path)
            log.info("time budget of %.0f s reached after epoch %d; resume with the same command", time_budget_s, epoch)
            break
    return PretrainResult(
        out_dir=out_dir,
        last_checkpoint=last_path,
        encoder_checkpoint=enc_path,
        epochs_done=epoch + 1,
        finished=epoch + 1 >= config.nepoch,
    )


def _build(
    config: PretrainConfig, runtime: Runtime
) -> tuple[MicrosnoopUNet, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The seeded U-Net in the runtime's memory format, its AdamW and its gradient scaler (fp16 on CUDA only)."""
    torch.manual_seed(config.seed)
    model = MicrosnoopUNet(config.encoder).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16 and runtime.device.type == "cuda")
    return model, optimizer, scaler


def _distributed(model: MicrosnoopUNet, runtime: Runtime) -> torch.nn.Module:
    """The model wrapped in DDP under torchrun, else itself."""
    if runtime.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)


def _set_lr(optimizer: torch.optim.Optimizer, config: PretrainConfig, epoch: int) -> float:
    """Set the schedule's learning rate for ``epoch`` on every parameter group; returns it."""
    lr = learning_rate(epoch, base_lr=config.lr, warmup_epochs=config.warmup_epochs, nepoch=config.nepoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _restore(
    last_path: Path,
    model: MicrosnoopUNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: PretrainConfig,
    *,
    pool_hash: str,
    init: dict[str, Any] | None,
) -> int:
    """Load a run's last state after checking it continues the same trajectory; returns the next epoch."""
    ckpt = load_checkpoint(last_path)
    state = ckpt.training_state or {}
    started = ckpt.provenance.get("init_from") or {}
    if started.get("sha256") != (init or {}).get("sha256"):
        raise CheckpointError(
            f"{last_path}: was started from other initial weights ({started.get('path', 'none')}); "
            "resume with the same --init-from, or pass a new --out folder"
        )
    _check_resumable(
        state.get("config", {}),
        config,
        last_path,
        saved_pool=ckpt.provenance.get("pool_manifest_hash"),
        pool_hash=pool_hash,
    )
    model.load_state_dict(ckpt.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    start_epoch = int(state["epoch"]) + 1
    log.info("resuming from %s at epoch %d", last_path, start_epoch)
    return start_epoch


def _train_epoch(
    ddp_model: torch.nn.Module,
    loader: _BatchLoader,
    plan: list[list[int]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: PretrainConfig,
    runtime: Runtime,
    epoch: int,
    progress: bool,
) -> tuple[list[float], int, float]:
    """One epoch of masked-reconstruction steps; returns the batch losses, images seen and seconds."""
    ddp_model.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    seen = 0
    bar = tqdm(
        total=config.images_per_epoch // runtime.world_size,
        desc=f"epoch {epoch + 1}/{config.nepoch}",
        unit="img",
        disable=not (progress and runtime.is_main),
        leave=False,
    )
    for b, target in enumerate(loader.batches(epoch, plan, runtime.rank, runtime.world_size)):
        batch_index = b * runtime.world_size + runtime.rank
        mask = _batch_mask(target, config, epoch, batch_index)
        loss = reconstruction_loss(ddp_model, target, mask, runtime)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        seen += target.shape[0]
        bar.update(target.shape[0])
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
    bar.close()
    return losses, seen, time.perf_counter() - t0


def initial_weights(model: MicrosnoopUNet, path: Path) -> dict[str, Any]:
    """Load another run's weights into ``model`` (whole U-Net, or the encoder alone); return their record."""
    ckpt = load_checkpoint(path)
    if ckpt.encoder.to_dict() != model.config.to_dict():
        raise CheckpointError(
            f"{path}: its network ({ckpt.encoder.to_dict()}) differs from this run's ({model.config.to_dict()}); "
            "pass the same --depths and --decoder-variant, or another --init-from"
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    expected = model.state_dict().keys()
    encoder_keys = {k for k in expected if k.startswith("encoder.")}
    if set(state) == set(expected):
        model.load_state_dict(state)
        part = "unet"
    elif set(state) == encoder_keys:
        model.load_state_dict(state, strict=False)
        part = "encoder"
    else:
        raise CheckpointError(
            f"{path}: its weights do not match this network's layers; pass a checkpoint written by "
            "'microsnoop pretrain' with the same --depths"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    log.info("initial weights (%s) from %s, sha256 %s", part, path, digest[:16])
    return {"path": str(path), "sha256": digest, "part": part, "epochs": ckpt.provenance.get("epochs")}


def _agree(flag: bool, runtime: Runtime) -> bool:
    """True on every process when any process says so (ranks must stop on the same epoch)."""
    if runtime.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=runtime.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _save_all(
    model: MicrosnoopUNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: PretrainConfig,
    provenance: dict[str, Any],
    epoch: int,
    last_path: Path,
    enc_path: Path,
) -> None:
    prov = {**provenance, "epochs": epoch + 1, "images_seen": (epoch + 1) * config.images_per_epoch}
    state = {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "config": config.to_dict(),
    }
    save_checkpoint(last_path, model, preprocess=config.preprocess, provenance=prov, training_state=state)
    save_checkpoint(enc_path, model, preprocess=config.preprocess, provenance=prov, encoder_only=True)


def _log_probe(
    probe_path: Path,
    model: MicrosnoopUNet,
    probe_set: ProbeSet,
    probe: ProbeConfig,
    config: PretrainConfig,
    runtime: Runtime,
    *,
    epoch: int,
) -> None:
    """Append one probe record (epoch -1: the untrained start) to ``probe.jsonl``."""
    contract = replace(
        probe.contract, **{f: getattr(config.preprocess, f) for f in ("lower_percentile", "upper_percentile")}
    )
    t0 = time.perf_counter()
    scores = probe_scores(encoder_of(model, contract), probe_set, contract, runtime, k=probe.k)
    record = {"epoch": epoch, "probe": probe_set.name, **scores, "probe_seconds": round(time.perf_counter() - t0, 2)}
    with probe_path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    log.info("probe after epoch %d: %s", epoch, record)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, crops: torch.Tensor, config: PretrainConfig, runtime: Runtime) -> float:
    """Mean reconstruction MSE on fixed validation crops with fixed masks (model left in train mode)."""
    was_training = model.training
    model.eval()
    losses = []
    for start in range(0, len(crops), config.batch_size):
        target = crops[start : start + config.batch_size]
        mask = _batch_mask(target, config, VALIDATION_EPOCH, start)
        losses.append(float(reconstruction_loss(model, target, mask, runtime)) * len(target))
    model.train(was_training)
    return sum(losses) / len(crops)
