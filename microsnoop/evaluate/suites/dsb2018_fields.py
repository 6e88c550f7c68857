"""DSB2018 full fields: image type (heuristic modality, derived labels) by 1-NN over field embeddings."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.device import init_runtime
from microsnoop.evaluate.classification import knn_loo_scores
from microsnoop.evaluate.handcrafted import field_features
from microsnoop.evaluate.suites.base import SuiteConfig, SuiteResult, count_classes, load_encoders, sample_per_class
from microsnoop.io.images import read_image, read_raw
from microsnoop.preprocess.normalize import with_intensity_levels
from microsnoop.profile import ProfileConfig, profile_images
from microsnoop.protocol import protocol_defaults

log = logging.getLogger(__name__)


def dsb2018_fields_suite(data_dir: Path, checkpoints: Mapping[str, Path | None], config: SuiteConfig) -> SuiteResult:
    """Full-field image type by 1-NN; fields are embedded in ``config.field_mode``.

    cell-region: cells cropped by the ground-truth masks, embeddings averaged per field; rescale: the
    whole field resized once.
    """
    if not (data_dir / "manifest.csv").is_file():
        raise FileNotFoundError(f"{data_dir}: the dsb2018-fields suite needs manifest.csv, images/ and labels/")
    man = pd.read_csv(data_dir / "manifest.csv")
    man = man.iloc[sample_per_class(man["heuristic_modality"], config.limit_per_class, config.seed)]
    man = man.reset_index(drop=True)
    fields, masks = [], []
    for image_id in man.image_id:
        fields.append(read_image(data_dir / "images" / f"{image_id}.png", gray_rgb=True))
        lab, _ = read_raw(data_dir / "labels" / f"{image_id}.png")
        masks.append(lab.astype(np.int32))
    labels = man["heuristic_modality"].to_numpy()
    runtime = init_runtime(device=config.device, amp=config.amp)
    feature_sets, versions = {}, {}
    for name, (encoder, version) in load_encoders(checkpoints, config).items():
        implied = protocol_defaults(encoder.preprocess.protocol)  # reference: top/left border cells skipped
        profile = ProfileConfig(
            mode=config.field_mode,
            rc=1.0,
            batch_size=config.batch_size,
            skip_border=implied.skip_border,
            border_rule=implied.border_rule,
        )
        contract = with_intensity_levels(encoder.preprocess, fields)
        profs = profile_images(encoder, fields, contract, runtime, profile, masks=masks)
        if any(p.embedding is None for p in profs) and implied.empty != "zero":
            raise ValueError(f"{data_dir}: a field has no labelled cells; every suite field needs a ground-truth mask")
        dim = encoder.config.embedding_dim * fields[0].shape[0]
        feature_sets[name] = np.stack(
            [np.zeros(dim, np.float32) if p.embedding is None else p.embedding for p in profs]
        )
        versions[name] = version
    if config.handcrafted:
        log.info("cp-measure features for %d fields (mean over ground-truth cells)", len(fields))
        feature_sets["cellprofiler_cp_measure"], _ = field_features(fields, masks, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure per cell (grey), mean per field"
    scores = {name: {"knn_1": knn_loo_scores(x, labels, k=1, n_boot=config.n_boot)} for name, x in feature_sets.items()}
    return SuiteResult(
        suite="dsb2018-fields",
        n=len(labels),
        classes=count_classes(labels),
        data_hash=hashlib.sha256("".join(man.image_id).encode()).hexdigest(),
        models=versions,
        scores=scores,
        details={
            "field_mode": config.field_mode,
            "protocol": config.protocol or "each checkpoint's own",
            "labels_note": "heuristic_modality is derived from pixel statistics, not ground truth",
        },
        embeddings=feature_sets,
        labels=labels,
    )
