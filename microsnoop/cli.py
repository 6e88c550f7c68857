"""The ``microsnoop`` command line; the only place that configures logging."""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from microsnoop.config import (
    AugmentConfig,
    EncoderConfig,
    MaskConfig,
    PreprocessContract,
    PretrainConfig,
    check_amp,
)
from microsnoop.errors import MicrosnoopError

AMP_HELP = (
    "Autocast: auto (bf16 on AMX CPUs and bf16 GPUs, fp16 on older GPUs, fp32 elsewhere: on AVX2-only CPUs bf16 is "
    "emulated, and with AVX512-BF16 alone it measured slower than fp32), bf16, fp16 or off (fp32). "
    "Pipeline steps read MICROSNOOP_AMP."
)

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Microsnoop: unbiased embeddings of heterogeneous microscopy images.\n\n"
    "Curate a pool, pretrain the masked-reconstruction U-Net, view reconstructions, embed and "
    "evaluate. Run 'microsnoop COMMAND --help' for every option.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]


@app.command()
def curate(
    out: Annotated[Path, typer.Option(help="Pool folder to write (planes/*.npy, manifest.parquet, skipped.tsv).")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files or folders (searched recursively). Optional when --types lists the images."),
    ] = None,
    types: Annotated[
        Path | None,
        typer.Option(
            help="CSV with columns path,type[,split][,source] (paths relative to "
            "the CSV). Types: fluorescence, brightfield (phase-contrast), "
            "tissue, histology. Unlisted images are typed by rule."
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Share of images held out as 'val' when the source gives "
            "no split (by a train/val/test folder or the CSV)."
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the hold-out draw.")] = 0,
    max_side: Annotated[int, typer.Option(help="Planes with a longer side are subsampled to at most this.")] = 2048,
    level: Annotated[int, typer.Option(help="OME-Zarr inputs: resolution level to read (0 = full resolution).")] = 0,
    verbose: Verbose = False,
) -> None:
    """Build a pretraining pool: one typed, split, hashed one-channel plane per image channel."""
    from microsnoop.curate import CurateConfig, curate_pool

    _setup_logging(verbose)
    _, report = curate_pool(
        list(inputs or []),
        out,
        types_table=types,
        config=CurateConfig(val_fraction=val_fraction, seed=seed, max_side=max_side, level=level),
    )
    typer.echo(report.summary())
    if report.skipped:
        typer.echo(f"skipped files are listed in {out / 'skipped.tsv'}")


@app.command()
def pretrain(
    pool: Annotated[Path, typer.Option(help="Pool folder written by 'microsnoop curate'.")],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt (resumable), encoder.pt, metrics.jsonl.")],
    nepoch: Annotated[int, typer.Option(help="Total epochs of the schedule (paper: 1000).")] = 1000,
    warmup_epochs: Annotated[int, typer.Option(help="Linear warm-up epochs (paper: 40).")] = 40,
    images_per_epoch: Annotated[
        int, typer.Option(help="Images sampled per epoch, type-balanced (paper: 12000).")
    ] = 12000,
    batch_size: Annotated[int, typer.Option(help="Images per optimisation step (per process under torchrun).")] = 16,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of 16x16 patches zeroed (paper: 0.25).")] = 0.25,
    patch_size: Annotated[int, typer.Option(help="Side of the masked square patches in pixels.")] = 16,
    brightness_range: Annotated[
        str,
        typer.Option(
            help="LOW,HIGH: multiply each training crop by a log-uniform factor in this range, so the encoder "
            "carries brightness (docs/intensity.md); 1,1 (default) is off, as in the paper."
        ),
    ] = "1,1",
    depths: Annotated[str, typer.Option(help="Comma-separated widths of the U-Net levels.")] = "32,64,128,256",
    input_size: Annotated[
        int, typer.Option(help="Embedding canvas of the fixed-canvas contract and default crop side (paper: 224).")
    ] = 224,
    crop_size: Annotated[
        int | None,
        typer.Option(help="Side of the square training crops (multiple of 16; default: --input-size, as the paper)."),
    ] = None,
    canvas: Annotated[
        str,
        typer.Option(help="Embedding canvas stored with the weights: crop (crop side, to a multiple of 8) or fixed."),
    ] = "crop",
    pooling: Annotated[
        str, typer.Option(help="Embedding pool stored with the weights: valid (the crop's footprint) or all.")
    ] = "valid",
    decoder_variant: Annotated[
        str,
        typer.Option(help="reference (style added before BatchNorm, momentum 0.1, as published) or cellpose3."),
    ] = "reference",
    probe: Annotated[
        Path | None,
        typer.Option(help="Probe set (.npz from scripts/make_probe_set.py): kNN accuracy logged to probe.jsonl."),
    ] = None,
    probe_every: Annotated[int, typer.Option(help="Epochs between probe evaluations.")] = 5,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Warm-start from this checkpoint's weights (a run's last.pt or encoder.pt, same --depths); "
            "fresh optimiser and schedule, recorded in the provenance."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, sampling, crops and masks.")] = 0,
    protocol: Annotated[
        str,
        typer.Option(
            help="Preprocessing contract stored with the weights: default, or reference (the published "
            "preprocessing: normalise after zero-padding; see docs/method-fidelity.md)."
        ),
    ] = "default",
    device: Annotated[str, typer.Option(help="'auto' (CUDA if present, else CPU), 'cpu' or 'cuda[:N]'.")] = "auto",
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
    channels_last: Annotated[bool, typer.Option(help="Use the channels-last memory format.")] = True,
    num_workers: Annotated[int, typer.Option(help="Data-loading worker processes (0: in the main process).")] = 0,
    max_epochs: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many epochs in this call; the run resumes on the same trajectory next time."
        ),
    ] = None,
    time_budget_min: Annotated[
        float | None,
        typer.Option(help="Stop after the epoch that crosses this many minutes; resume later with the same command."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt when it exists.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (loss, img/s, ETA).")] = True,
    verbose: Verbose = False,
) -> None:
    """Masked self-supervised pretraining (multi-GPU: 'torchrun --nproc-per-node N -m microsnoop pretrain ...')."""
    from microsnoop.pretrain.train import ProbeConfig
    from microsnoop.pretrain.train import pretrain as run_pretrain
    from microsnoop.protocol import contract_for_protocol

    _setup_logging(verbose)
    config = PretrainConfig(
        nepoch=nepoch,
        warmup_epochs=warmup_epochs,
        images_per_epoch=images_per_epoch,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        amp=amp,
        channels_last=channels_last,
        num_workers=num_workers,
        max_epochs_this_run=max_epochs,
        crop_size=crop_size,
        encoder=EncoderConfig(depths=tuple(int(d) for d in depths.split(",")), decoder_variant=decoder_variant),
        mask=MaskConfig(patch_size=patch_size, mask_ratio=mask_ratio),
        augment=AugmentConfig(brightness_range=_pair(brightness_range, "--brightness-range")),
        preprocess=contract_for_protocol(
            PreprocessContract(input_size=input_size, canvas=canvas, pooling=pooling)
            if protocol == "default"
            else PreprocessContract(input_size=input_size),
            protocol,
        ),
    )
    result = run_pretrain(
        pool,
        out,
        config,
        device=device,
        resume=resume,
        time_budget_s=time_budget_min * 60 if time_budget_min else None,
        progress=progress,
        probe=ProbeConfig(probe, every=probe_every) if probe is not None else None,
        init_from=init_from,
    )
    typer.echo(f"epochs done: {result.epochs_done}/{nepoch}; encoder: {result.encoder_checkpoint}")


def _pair(text: str, option: str) -> tuple[float, float]:
    """Two comma-separated numbers, or a one-line error naming the option."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes two numbers LOW,HIGH (e.g. 0.5,2), got {text!r}") from exc
    return low, high


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (last.pt) or encoder checkpoint.")],
    out: Annotated[Path, typer.Option(help="Encoder-only file to write.")],
    half: Annotated[bool, typer.Option(help="Store weights in float16 (half the size; loads as float32).")] = True,
    encoder_only: Annotated[
        bool,
        typer.Option(
            help="Drop the decoder (embedding only); --no-encoder-only keeps it so the file also serves reconstruction."
        ),
    ] = True,
    canvas: Annotated[
        str | None, typer.Option(help="Store this embedding canvas (crop or fixed) in the contract; omitted: kept.")
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help="Store this pooling (valid or all) in the contract; omitted: kept.")
    ] = None,
    intensity: Annotated[
        str | None,
        typer.Option(
            help="Store this intensity scale (crop or dataset, docs/intensity.md) in the contract; omitted: kept."
        ),
    ] = None,
) -> None:
    """Write a shippable checkpoint (weights, contract, provenance; no optimiser state)."""
    from microsnoop.models.checkpoint import file_sha256, load_unet, save_checkpoint
    from microsnoop.protocol import with_embedding_options

    model, ckpt = load_unet(checkpoint)
    contract = with_embedding_options(ckpt.preprocess, canvas=canvas, pooling=pooling, intensity=intensity)
    provenance = dict(ckpt.provenance)
    if contract != ckpt.preprocess:  # same weights, another embedding contract: say where it came from
        changed = {k: v for k, v in contract.to_dict().items() if ckpt.preprocess.to_dict().get(k) != v}
        provenance["contract_changed"] = {"from_sha256": file_sha256(checkpoint), "fields": changed}
    save_checkpoint(out, model, preprocess=contract, provenance=provenance, encoder_only=encoder_only, half=half)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


@app.command("loss-curve")
def loss_curve(
    metrics: Annotated[Path, typer.Argument(help="metrics.jsonl of a pretraining run.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")],
) -> None:
    """Plot train/validation MSE and the learning rate of a pretraining run."""
    from microsnoop.pretrain.report import plot_loss_curve

    typer.echo(f"wrote {plot_loss_curve(metrics, out)}")


@app.command()
def reconstruct(
    checkpoint: Annotated[Path, typer.Option(help="Training checkpoint (last.pt) holding the full U-Net.")],
    out: Annotated[Path, typer.Option(help="PNG figure to write.")],
    images: Annotated[list[Path], typer.Argument(help="Image files; every channel becomes a row.")],
    mask_ratio: Annotated[float, typer.Option(help="Fraction of patches zeroed.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the crop position and the mask.")] = 0,
    max_rows: Annotated[int, typer.Option(help="At most this many rows (planes) in the figure.")] = 6,
) -> None:
    """Original / masked / reconstructed panels as a PNG (like the paper's Fig. 2)."""
    from microsnoop.reconstruct import reconstruction_figure

    reconstruction_figure(checkpoint, images, out, mask=MaskConfig(mask_ratio=mask_ratio), seed=seed, max_rows=max_rows)
    typer.echo(f"wrote {out}")


@app.command()
def knn(
    cells: Annotated[Path, typer.Option(help="NPZ with 'images' (N x C x H x W) and a CSV of labels beside it.")],
    labels_csv: Annotated[Path, typer.Option("--labels", help="CSV with one row per image, in the NPZ's order.")],
    label_column: Annotated[str, typer.Option(help="Column of the CSV holding the class.")] = "label",
    checkpoint: Annotated[Path | None, typer.Option(help="Encoder checkpoint; omitted: an untrained network.")] = None,
    k: Annotated[int, typer.Option(help="Neighbours (leave-one-out: k+1 queried, self dropped).")] = 11,
    batch_size: Annotated[int, typer.Option(help="Planes per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda[:N]'.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the untrained network.")] = 0,
) -> None:
    """Embed labelled single cells and print leave-one-out kNN accuracy (cosine)."""
    from microsnoop.demo import knn_report

    report = knn_report(
        cells,
        labels_csv,
        label_column=label_column,
        checkpoint=checkpoint,
        k=k,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
    typer.echo(json.dumps(report, indent=2))


@app.command()
def embed(
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder: embeddings.parquet, cells.parquet (cell-region), "
            "skipped.parquet, run.json, parts/ (resume state)."
        ),
    ],
    folder: Annotated[
        Path | None,
        typer.Option(
            help="Embed every image file under this folder, or an OME-Zarr image or HCS plate (.zarr; plate, "
            "well and field become Metadata_Plate, Metadata_Well, Metadata_Site)."
        ),
    ] = None,
    table: Annotated[
        Path | None,
        typer.Option(
            help="CSV/Parquet with a 'path' column (optional Metadata_ImageID, "
            "index, mask_path and Metadata_* columns)."
        ),
    ] = None,
    stack: Annotated[Path | None, typer.Option(help="Stacked N x C x H x W .npy (memory-mapped) or .npz.")] = None,
    level: Annotated[int, typer.Option(help="OME-Zarr inputs: resolution level to read (0 = full resolution).")] = 0,
    channels: Annotated[
        str | None,
        typer.Option(help="OME-Zarr inputs: channels to embed, in order, by index or OMERO name (e.g. 'DAPI,Actin')."),
    ] = None,
    metadata: Annotated[
        Path | None, typer.Option(help="CSV with one row per image of --stack (becomes Metadata_*).")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Encoder checkpoint; omit with --untrained.")] = None,
    untrained: Annotated[bool, typer.Option(help="Use a seeded untrained encoder (a baseline).")] = False,
    mode: Annotated[
        str,
        typer.Option(
            help="single-cell, cell-region (segment or --table mask_path, crop cells by "
            "the paper's box formula, mean per image), rescale or tile."
        ),
    ] = "single-cell",
    rc: Annotated[float, typer.Option(help="Cell-region rescale constant Rc (2 for BBBC021, 1 for tissue).")] = 2.0,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="reference (the published preprocessing end to end: normalise after padding, skip cells on the "
            "top/left edge, zero vectors for images without cells, no anti-aliasing, unpadded tiles) or default; "
            "omitted: the checkpoint's own. Recorded in run.json and the Parquet metadata."
        ),
    ] = None,
    canvas: Annotated[
        str | None,
        typer.Option(
            help="Single-cell and cell-region crops: crop (padded to their own side, to a multiple of 8) or fixed "
            "(padded to the input size, the paper's); omitted: the checkpoint's own. Recorded in run.json."
        ),
    ] = None,
    pooling: Annotated[
        str | None,
        typer.Option(
            help="valid (average only the positions a crop covers) or all (the whole canvas, the paper's); "
            "omitted: the checkpoint's own. Recorded in run.json."
        ),
    ] = None,
    intensity: Annotated[
        str | None,
        typer.Option(
            help="crop (each crop's channels scaled to their own percentiles, the paper's) or dataset (one scale "
            "per channel, fitted on up to 512 of the input images: brightness differences between cells survive; "
            "docs/intensity.md); omitted: the checkpoint's own. The levels are recorded in run.json."
        ),
    ] = None,
    intensity_levels_from: Annotated[
        Path | None,
        typer.Option(
            help="Reuse the intensity levels of an earlier run (its run.json), so new images land in its space."
        ),
    ] = None,
    skip_border: Annotated[
        bool | None,
        typer.Option(
            help="Cell-region: skip cells touching the border (all four edges; top/left only under the reference "
            "protocol). Default: off, on under --protocol reference."
        ),
    ] = None,
    nucleus_channel: Annotated[int, typer.Option(help="Cell-region: channel to segment.")] = 0,
    segmenter: Annotated[
        str, typer.Option(help="Cell-region without masks: classical (offline) or cellpose (needs --cellpose-weights).")
    ] = "classical",
    cellpose_weights: Annotated[Path | None, typer.Option(help="User-supplied Cellpose weights file.")] = None,
    tile_overlap: Annotated[float, typer.Option(help="Tile mode: overlap fraction of 224 tiles.")] = 0.1,
    resize_small_to: Annotated[int | None, typer.Option(help="Single-cell: upscale crops smaller than this.")] = None,
    memory_budget_mb: Annotated[float, typer.Option(help="CPU memory for one chunk of prepared images.")] = 1024.0,
    chunk_images: Annotated[int | None, typer.Option(help="Images per chunk (overrides the memory budget).")] = None,
    batch_size: Annotated[int, typer.Option(help="Planes per forward pass on the device.")] = 64,
    empty: Annotated[
        str | None,
        typer.Option(help="Images with no cells: drop (counted; default) or zero (reference protocol's default)."),
    ] = None,
    h5ad: Annotated[bool, typer.Option(help="Also write embeddings.h5ad (AnnData).")] = False,
    gray_rgb: Annotated[
        bool, typer.Option(help="RGB image files (histology, colour) become one gray channel, as in pretraining.")
    ] = False,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda[:N]'; torchrun for several GPUs.")] = "auto",
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    verbose: Verbose = False,
) -> None:
    """Embed images in bounded memory, resumably (re-run the same command to resume)."""
    from microsnoop.device import init_runtime
    from microsnoop.io.omezarr import parse_channels
    from microsnoop.io.sources import source_from_folder, source_from_stack, source_from_table
    from microsnoop.models.factory import load_named
    from microsnoop.profile import ProfileConfig
    from microsnoop.protocol import contract_for_protocol, levels_of_run, protocol_defaults, with_embedding_options
    from microsnoop.stream import StreamConfig, run_embedding

    _setup_logging(verbose)
    given = [x for x in (folder, table, stack) if x is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --folder, --table or --stack")
    source = (
        source_from_folder(folder, level=level, channels=parse_channels(channels))
        if folder
        else source_from_table(table)
        if table
        else source_from_stack(stack, metadata)  # type: ignore[arg-type]
    )
    if checkpoint is None and not untrained:
        raise typer.BadParameter("give --checkpoint PATH or --untrained")
    encoder, model_id = load_named(checkpoint)  # None: the untrained network, seed 0
    contract = encoder.preprocess if protocol is None else contract_for_protocol(encoder.preprocess, protocol)
    contract = with_embedding_options(contract, canvas=canvas, pooling=pooling, intensity=intensity)
    if intensity_levels_from is not None:
        if intensity == "crop":
            raise typer.BadParameter("--intensity crop scales each crop on its own: drop --intensity-levels-from")
        contract = levels_of_run(contract, intensity_levels_from)
    implied = protocol_defaults(contract.protocol)
    segment = None
    if mode == "cell-region":
        from microsnoop.segment import make_segmenter

        segment = make_segmenter(segmenter, cellpose_weights).segment
    result = run_embedding(
        source,
        out,
        encoder,
        contract,
        init_runtime(device=device, amp=amp),
        model_id=model_id,
        profile=ProfileConfig(
            mode=mode,
            rc=rc,
            skip_border=implied.skip_border if skip_border is None else skip_border,
            border_rule=implied.border_rule,
            nucleus_channel=nucleus_channel,
            tile_overlap=tile_overlap,
            resize_small_to=resize_small_to,
            batch_size=batch_size,
        ),
        stream=StreamConfig(
            memory_budget_mb=memory_budget_mb,
            chunk_images=chunk_images,
            empty=empty or implied.empty,
            write_h5ad=h5ad,
            gray_rgb=gray_rgb,
        ),
        segment=segment,
        progress=progress,
    )
    typer.echo(
        f"{result.n_images} images embedded -> {result.embeddings}; {result.n_skipped} skipped "
        f"(listed in {out / 'skipped.parquet'}); chunks computed {result.chunks_done}, "
        f"reused {result.chunks_reused}"
    )


@app.command()
def segment(
    out: Annotated[Path, typer.Option(help="Folder for <stem>_mask.tif label images and masks.csv (counts).")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    channel: Annotated[int, typer.Option(help="Channel to segment (usually the nuclei).")] = 0,
    segmenter: Annotated[
        str, typer.Option(help="classical (offline, no weights), cellpose (needs --cellpose-weights) or auto.")
    ] = "auto",
    cellpose_weights: Annotated[Path | None, typer.Option(help="User-supplied Cellpose 3 weights file.")] = None,
    sigma: Annotated[float, typer.Option(help="Classical: Gaussian blur sigma.")] = 0.5,
    threshold: Annotated[str, typer.Option(help="Classical: otsu or local.")] = "otsu",
    min_size: Annotated[int, typer.Option(help="Classical: smallest object kept (pixels).")] = 30,
    min_distance: Annotated[
        int | None,
        typer.Option(
            help="Classical: minimum distance between nucleus centres; "
            "default adapts to each image's median nucleus radius."
        ),
    ] = None,
    invert: Annotated[bool, typer.Option(help="Classical: objects are darker than the background.")] = False,
    level: Annotated[int, typer.Option(help="OME-Zarr inputs: resolution level to read (0 = full resolution).")] = 0,
) -> None:
    """Segment nuclei into label TIFFs with cell counts; unreadable files are listed, not fatal."""
    from microsnoop.curate import list_images
    from microsnoop.segment import ClassicalConfig, make_segmenter, segment_files

    _setup_logging(False)
    config = ClassicalConfig(
        sigma=sigma, threshold=threshold, min_size=min_size, min_distance=min_distance, invert=invert
    )
    table = segment_files(
        list_images(list(images)),
        out,
        make_segmenter(segmenter, cellpose_weights, config=config),
        channel=channel,
        level=level,
    )
    failed = int((table["error"] != "").sum())
    typer.echo(
        f"{len(table) - failed} images segmented, {int(table['n_cells'].sum())} cells; {failed} failed; "
        f"see {out / 'masks.csv'}"
    )


@app.command()
def sphere(
    profiles: Annotated[
        Path, typer.Argument(help="Embeddings/profiles table (Parquet or CSV) with Metadata_* columns.")
    ],
    out: Annotated[Path, typer.Option(help="Sphered table to write (Parquet).")],
    control_column: Annotated[str, typer.Option(help="Column naming the treatment.")] = "Metadata_Compound",
    control_value: Annotated[str, typer.Option(help="Value marking negative controls.")] = "DMSO",
    batch_column: Annotated[str, typer.Option(help="Column defining batches (plates).")] = "Metadata_Plate",
    scope: Annotated[
        str,
        typer.Option(
            help="auto (per batch when every batch has >= 2 controls per feature, else centred when every batch has "
            ">= 3 controls, else global; the choice is printed), batch (one transform per batch), centred (each "
            "batch centred on its controls, one whitening for all) or global (what the reference code does)."
        ),
    ] = "auto",
    reg: Annotated[
        str, typer.Option(help="Eigenvalue regulariser: 'knee' (knee / 10, reference) or a number.")
    ] = "knee",
    variance_floor: Annotated[
        float,
        typer.Option(
            help="Floor on feature variances (reference 1e-3, for embeddings; use ~1e-12 for raw CellProfiler units)."
        ),
    ] = 1e-3,
    missing_controls: Annotated[
        str,
        typer.Option(
            help="A batch without controls: error, or global (fall back to "
            "the transform fitted on all controls, with a warning)."
        ),
    ] = "error",
    save: Annotated[Path | None, typer.Option(help="Also save the fitted sphering (.npz) for reuse.")] = None,
    load: Annotated[Path | None, typer.Option(help="Apply a saved sphering instead of fitting.")] = None,
) -> None:
    """Sphere profiles (ZCA-corr) fitted on negative controls, per batch or globally."""
    from microsnoop.postprocess.sphere import SphereConfig, apply_sphering, fit_sphering, load_sphering, save_sphering

    df = _read_table(profiles)
    if load is not None:
        fitted = load_sphering(load)
    else:
        config = SphereConfig(
            control_column=control_column,
            control_value=control_value,
            batch_column=batch_column,
            scope=scope,
            reg=reg if reg == "knee" else float(reg),
            variance_floor=variance_floor,
            missing_controls=missing_controls,
        )
        fitted = fit_sphering(df, config)
    if save is not None:
        save_sphering(save, fitted)
    out.parent.mkdir(parents=True, exist_ok=True)
    apply_sphering(df, fitted).to_parquet(out, index=False)
    typer.echo(
        f"sphered {len(df)} rows with {len(fitted.transforms)} transform(s) (scope {fitted.config.scope}"
        f"{', fallbacks ' + str(fitted.fallbacks) if fitted.fallbacks else ''}) -> {out}"
    )
    if fitted.scope_reason:
        typer.echo(f"scope: {fitted.scope_reason}")


@app.command()
def aggregate(
    profiles: Annotated[Path, typer.Argument(help="Profiles table (Parquet or CSV) with Metadata_* columns.")],
    out: Annotated[Path, typer.Option(help="Aggregated table to write (Parquet).")],
    level: Annotated[
        str, typer.Option(help="well (plate + well) or treatment (compound + concentration).")
    ] = "treatment",
    by: Annotated[list[str] | None, typer.Option(help="Explicit grouping columns (overrides --level).")] = None,
    method: Annotated[str, typer.Option(help="mean or median.")] = "mean",
    empty: Annotated[str, typer.Option(help="Images with no cells: drop (counted) or zero (reference).")] = "drop",
) -> None:
    """Aggregate profiles per well or per treatment; images with no cells are dropped and counted."""
    from microsnoop.postprocess import aggregate as agg

    df, n_empty = agg.drop_empty(_read_table(profiles), empty=empty)
    if by:
        result = agg.aggregate(df, list(by), method=method)
    elif level == "well":
        result = agg.per_well(df)
    elif level == "treatment":
        result = agg.per_treatment(df)
    else:
        raise typer.BadParameter("level must be 'well' or 'treatment'")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out, index=False)
    typer.echo(f"{len(df)} rows -> {len(result)} groups -> {out}; images with no cells: {n_empty} ({empty})")


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@app.command()
def evaluate(
    embeddings: Annotated[
        Path, typer.Argument(help="Embeddings/profiles table (Parquet or CSV) with Metadata_* columns.")
    ],
    label: Annotated[str, typer.Option(help="Metadata column holding the class (e.g. Metadata_label, Metadata_MoA).")],
    protocol: Annotated[
        str,
        typer.Option(
            help="knn (leave-one-out, or train/test with --split-column), mlp "
            "(5-fold stratified MLP) or moa (1-NN NSC/NSCB over treatment "
            "profiles; needs Metadata_Compound and --batch-column)."
        ),
    ] = "knn",
    k: Annotated[int, typer.Option(help="Neighbours for knn.")] = 11,
    split_column: Annotated[
        str | None, typer.Option(help="knn: column with 'train'/'test' rows instead of leave-one-out.")
    ] = None,
    batch_column: Annotated[str, typer.Option(help="moa: batch column for NSCB.")] = "Metadata_Batch",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
) -> None:
    """Score an embeddings table: kNN, MLP or the BBBC021 MoA protocol, with 95% bootstrap intervals."""
    import numpy as np

    from microsnoop.evaluate import classification as cls
    from microsnoop.evaluate.moa import MoAColumns, moa_accuracy
    from microsnoop.postprocess.sphere import feature_columns

    df = _read_table(embeddings)
    if label not in df.columns:
        raise typer.BadParameter(
            f"{embeddings}: no column {label!r}; Metadata columns: "
            f"{[c for c in df.columns if c.startswith('Metadata_')]}"
        )
    feats = feature_columns(df)
    x, y = df[feats].to_numpy(np.float64), df[label].astype(str).to_numpy()
    if protocol == "knn" and split_column:
        train, test = (df[split_column] == "train").to_numpy(), (df[split_column] == "test").to_numpy()
        pred = cls.knn_predict_split(x[train], y[train], x[test], k)
        scores = {"k": k, **cls.scores_with_intervals(y[test], pred, n_boot=n_boot)}
    elif protocol == "knn":
        scores = cls.knn_loo_scores(x, y, k=k, n_boot=n_boot)
    elif protocol == "mlp":
        scores = cls.scores_with_intervals(y, cls.mlp_predict_cv(x, y), n_boot=n_boot)
    elif protocol == "moa":
        res = moa_accuracy(df, feats, columns=MoAColumns(moa=label, batch=batch_column))
        scores = {k2: v for k2, v in res.items() if not k2.endswith("_hits")}
    else:
        raise typer.BadParameter("protocol must be knn, mlp or moa")
    text = json.dumps(scores, indent=2, default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    typer.echo(text)


@app.command()
def joint(
    embeddings: Annotated[
        list[Path],
        typer.Argument(
            help="One embeddings table (its channel blocks ch{c}_* are the modalities) or several tables of the "
            "same samples, one per modality (NAME=PATH names it); Parquet or CSV."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Joint table to write (Parquet): the Metadata_* columns and joint_*.")],
    n_components: Annotated[int, typer.Option(help="PCA latent size per modality (the common size).")] = 32,
    names: Annotated[
        str | None,
        typer.Option(
            help="One table: modality names, one per channel (e.g. brightfield,DNA,darkfield); default: "
            "Metadata_Channels (OME-Zarr) or ch0, ch1, ..."
        ),
    ] = None,
    key: Annotated[str, typer.Option(help="Several tables: the id column joining them (inner join).")] = (
        "Metadata_ImageID"
    ),
    balance: Annotated[bool, typer.Option(help="Scale every reduced modality to unit total variance.")] = True,
    label: Annotated[
        str | None,
        typer.Option(
            help="Metadata column of known labels: also score each modality alone, the joint and the raw "
            "concatenation (silhouette, KMeans ARI with k = number of labels, kNN) into OUT .json and .md."
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the PCA solver and KMeans.")] = 0,
) -> None:
    """Joint multi-modal embedding (as in the paper): PCA per modality to a common size, concatenated."""
    from microsnoop.evaluate.clustering import evaluate_joint, joint_markdown
    from microsnoop.postprocess import joint as jp

    if len(embeddings) == 1:
        df = _read_table(embeddings[0])
        given = names.split(",") if names else None
        if given is None and "Metadata_Channels" in df.columns and df["Metadata_Channels"].nunique() == 1:
            given = str(df["Metadata_Channels"].iloc[0]).split("|")
        blocks = jp.channel_blocks(df, given)
        meta = df[[c for c in df.columns if c.startswith("Metadata_")]]
    else:
        tables = {}
        for item in embeddings:
            name, sep, path = str(item).partition("=")
            tables[name if sep else Path(name).stem] = _read_table(Path(path if sep else name))
        meta, blocks = jp.blocks_from_tables(tables, key=key)
    config = jp.JointConfig(n_components=n_components, balance=balance, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    jp.joint_table(meta, jp.JointEmbedding(config).fit_transform(blocks)).to_parquet(out, index=False)
    typer.echo(f"{len(meta)} samples, modalities {list(blocks)} -> {len(blocks)} x {n_components} features -> {out}")
    if label is not None:
        if label not in meta.columns:
            raise typer.BadParameter(f"no column {label!r}; Metadata columns: {list(meta.columns)}")
        scores = evaluate_joint(blocks, meta[label].astype(str).to_numpy(), config=config, n_boot=n_boot)
        out.with_suffix(".json").write_text(json.dumps({"label": label, "scores": scores}, indent=2) + "\n")
        markdown = joint_markdown({out.stem: scores})
        out.with_suffix(".md").write_text(markdown)
        typer.echo(markdown)


@app.command()
def benchmark(
    suite: Annotated[
        str,
        typer.Option(
            help="cell-cycle (7 and 5 classes; kNN and 5-fold MLP) or dsb2018-fields "
            "(image type from derived labels, 1-NN)."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="The suite's data folder, e.g. ../shared/data/cellcycle or "
            "../shared/data/dsb2018 (demo_data/... for a quick run)."
        ),
    ],
    checkpoint: Annotated[list[Path] | None, typer.Option(help="Encoder checkpoint(s) to score; repeatable.")] = None,
    untrained: Annotated[bool, typer.Option(help="Also score an untrained network of the same architecture.")] = True,
    handcrafted: Annotated[bool, typer.Option(help="Also score cp-measure hand-crafted features.")] = True,
    mlp: Annotated[bool, typer.Option(help="Also run the 5-fold MLP (cell-cycle).")] = True,
    limit_per_class: Annotated[
        int | None, typer.Option(help="At most this many items per class (per well for bbbc021-cells), seeded.")
    ] = None,
    k: Annotated[int, typer.Option(help="Neighbours for kNN (cell-cycle; fields use 1).")] = 11,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    out: Annotated[Path, typer.Option(help="Folder for <suite>.json, <suite>.md and PNG plots.")] = Path(
        "benchmarks/results/suites"
    ),
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda[:N]'.")] = "auto",
    protocol: Annotated[
        str | None,
        typer.Option(
            help="reference or default preprocessing for every encoder (omitted: each checkpoint's own); "
            "bbbc021-profiles always reports both side by side."
        ),
    ] = None,
    canvas: Annotated[
        str | None, typer.Option(help="fixed or crop canvas for every encoder (omitted: each checkpoint's own).")
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help="all or valid pooling for every encoder (omitted: each checkpoint's own).")
    ] = None,
    intensity: Annotated[
        str | None,
        typer.Option(
            help="crop (each crop's own percentiles) or dataset (one scale per channel, fitted on the suite's "
            "images) for every encoder (omitted: each checkpoint's own)."
        ),
    ] = None,
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
) -> None:
    """Score embeddings and baselines on a benchmark suite; writes JSON, markdown and plots."""
    import sys

    from microsnoop.device import Runtime, describe_precision, pick_amp, pick_device
    from microsnoop.evaluate.report import write_report
    from microsnoop.evaluate.suites import SuiteConfig, suites

    _setup_logging(False)
    registry = suites()
    if suite not in registry:
        raise typer.BadParameter(f"unknown suite {suite!r}; choose from {', '.join(sorted(registry))}")
    checkpoints: dict[str, Path | None] = {p.stem: p for p in checkpoint or []}
    if untrained:
        checkpoints["untrained"] = None
    config = SuiteConfig(
        limit_per_class=limit_per_class,
        k=k,
        n_boot=n_boot,
        device=device,
        handcrafted=handcrafted,
        mlp=mlp,
        protocol=protocol,
        canvas=canvas,
        pooling=pooling,
        intensity=intensity,
        amp=check_amp(amp),
    )
    result = registry[suite](data, checkpoints, config)
    device_used = pick_device(device)
    precision = describe_precision(Runtime(device_used, pick_amp(device_used, amp), channels_last=True))
    paths = write_report(result, out, command="microsnoop " + " ".join(sys.argv[1:]), precision=precision)
    typer.echo(paths["md"].read_text())
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    for note in report_to_sinks(paths):
        typer.echo(note)


def report_to_sinks(paths: dict[str, Path]) -> list[str]:
    """Hand a written report to installed sinks (entry-point group ``microsnoop.reports``, e.g. MLflow)."""
    notes = (sink(paths) for sink in _loaded_entry_points("microsnoop.reports"))
    return [str(note) for note in notes if note]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's pool, run, figure and scores.")] = Path("runs/demo"),
    data: Annotated[Path, typer.Option(help="Demo data folder shipped in the repo.")] = Path("demo_data"),
    shipped: Annotated[Path, typer.Option(help="The shipped encoder to compare.")] = Path(
        "models/microsnoop-cpu-v1.pt"
    ),
    epochs: Annotated[int, typer.Option(help="Epochs of the brief pretraining.")] = 3,
    images_per_epoch: Annotated[int, typer.Option(help="Images per epoch of the brief pretraining.")] = 48,
    depths: Annotated[
        str, typer.Option(help="Comma-separated U-Net widths of the demo's network (e.g. 8,16,32 for a quick run).")
    ] = "32,64,128,256",
    input_size: Annotated[int, typer.Option(help="Side of the training crops and embedded cells.")] = 224,
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
) -> None:
    """Library-only demo (make demo-core): curate, pretrain briefly, reconstruct, embed, kNN vs untrained."""
    from microsnoop.demo import DemoConfig, run_demo

    _setup_logging(False)
    train = PretrainConfig(
        nepoch=epochs,
        warmup_epochs=0,
        images_per_epoch=images_per_epoch,
        amp=amp,
        encoder=EncoderConfig(depths=tuple(int(d) for d in depths.split(","))),
        preprocess=PreprocessContract(input_size=input_size),
    )
    run_demo(out=out, data=data, shipped=shipped, config=DemoConfig(pretrain=train), echo=typer.echo)


def _loaded_entry_points(group: str) -> list[Any]:
    """The objects of an entry-point group; one whose extra is not installed is skipped (core still works)."""
    loaded = []
    for entry in entry_points(group=group):
        try:
            loaded.append(entry.load())
        except ImportError as exc:
            logging.getLogger(__name__).debug("%s plugin %s not loaded: %s", group, entry.name, exc)
    return loaded


def load_plugins(target: typer.Typer) -> None:
    """Add commands from installed plugins (entry-point group ``microsnoop.cli``), e.g. the platform layer."""
    for register in _loaded_entry_points("microsnoop.cli"):
        register(target)


def main() -> None:
    """Entry point: run the app, turning library errors into one clear line and exit code 2."""
    load_plugins(app)
    try:
        app()
    except MicrosnoopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc
    except OSError as exc:  # a folder given for a file, a read-only disk, a full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}; check the path, its kind and your permissions", err=True)
        raise SystemExit(2) from exc
