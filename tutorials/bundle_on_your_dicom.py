# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Using the 2D bundle on your own DICOM folder: datalist, train -> harden -> guard -> evaluate, then inference.

Your data: a folder of DICOM files organised as one sub-folder per class (``DIR/normal/*.dcm``,
``DIR/pneumonia/*.dcm``; a sub-folder holding a DICOM series counts as one image), or a CSV manifest with the
columns ``image,label``. Without either, the tutorial writes such a folder itself: PneumoniaMNIST chest X-rays
(the ``.npz``) as 8-bit DICOM files, ``--num-per-class`` of each class.

Steps:

1. (demo only) write the PneumoniaMNIST images as DICOM files in class sub-folders;
2. build the datalist with ``monai_robust.data.folders`` (``datalist_from_folders`` or ``datalist_from_csv``):
   every file is checked, a bad one is named; a stratified training / validation / test split; the intensity
   window that maps the stored (or rescaled) values to the model's [0, 1] (default: the range the files' headers
   allow) is written into the datalist, so the attack budgets can be reported in the image's own units;
3. run the bundle ``bundles/robust_xray_classification`` through MONAI's ``ConfigWorkflow`` (what
   ``python -m monai.bundle run`` does) with ``dataset_dir`` pointing at that datalist: standard training, fast
   adversarial training with sparsity-denoising blocks (``harden.json``), a detector guard fitted on the training
   images and calibrated on the validation images (``guard.json``), and the robustness evaluation with its HTML
   report (``evaluate.json``), in one chained run;
4. run ``inference.json`` with the hardened checkpoint and the guard: per test image, the class probabilities,
   the predicted class and the guard's verdict (``adversarial_suspected``);
5. print where the report, the checkpoint and the predictions are, and write a summary JSON.

Nothing is written into the bundle or your DICOM folder: the datalist, checkpoints, TensorBoard logs, report and
predictions all go under ``--output-dir``. The full default (1000 images, the bundle's own 4 + 2 epochs) took 5
minutes (180 s of CPU) on one thread of a shared 2-core machine; ``--tiny`` (40 images, 1 + 1 epoch, batch 8)
takes seconds and is a smoke test, not a measurement.

Usage::

    python tutorials/bundle_on_your_dicom.py --output-dir runs/dicom_demo              # demo DICOM from the .npz
    python tutorials/bundle_on_your_dicom.py --dicom-dir /data/cxr --output-dir runs/cxr  # your class folders
    python tutorials/bundle_on_your_dicom.py --manifest /data/cxr.csv --window 0 4095 --output-dir runs/cxr
    python tutorials/bundle_on_your_dicom.py --tiny --output-dir /tmp/dicom_demo       # seconds
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from monai.bundle import ConfigWorkflow

from monai_robust.data import datalist_from_csv, datalist_from_folders, is_dicom_input, read_dicom, read_medmnist
from monai_robust.data.folders import ImageDatalist
from monai_robust.utils.intensity import LinearIntensityMap
from monai_robust.utils.threads import add_num_threads_argument, set_num_threads

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "robust_xray_classification"
CLASSES = ("normal", "pneumonia")  # PneumoniaMNIST's labels 0 and 1
# full settings and the --tiny smoke-test settings; explicit flags override either
# (guard_eps / guard_fpr / aa_steps / aa_queries None: the bundle's own, 2/255, 5 %, 100 steps, 5000 queries)
FULL = {"num_per_class": 500, "num_epochs": 4, "harden_epochs": 2, "batch_size": 32, "guard_eps": None,
        "guard_fpr": None, "aa_steps": None, "aa_queries": None}
# tiny: the guard is fitted on the adversarial images that fool the model (a 2/255 PGD may fool none of a few
# images) and its threshold is calibrated on at least 1 / guard_fpr validation images (6 here); the evaluation's
# AutoAttack runs 2 steps and 5 Square queries
TINY = {"num_per_class": 20, "num_epochs": 1, "harden_epochs": 1, "batch_size": 8, "guard_eps": 16.0, "guard_fpr": 0.2,
        "aa_steps": 2, "aa_queries": 5}


# ---------------------------------------------------------------------------------------------------------------
# 1. demo data: PneumoniaMNIST as DICOM files in class sub-folders
# ---------------------------------------------------------------------------------------------------------------
def _uid(*parts: Any) -> str:
    """A deterministic DICOM UID (the same image gets the same UID on every run)."""
    import pydicom.uid

    return str(pydicom.uid.generate_uid(entropy_srcs=["monai_robust.tutorial", *map(str, parts)]))


def write_dicom(path: Path, pixels: np.ndarray, index: int, spacing_mm: float = 0.5) -> None:
    """Writes one 8-bit grayscale image as a DICOM Secondary Capture file (Explicit VR Little Endian, MONOCHROME2).

    Real chest X-rays come from your PACS with their own attributes; this writes only what a reader needs: the
    pixel module, a pseudonymous patient, and UIDs.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = _uid("sop", index)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study", index), _uid("series", index)
    pid = hashlib.sha256(f"pneumoniamnist-{index}".encode()).hexdigest()[:12].upper()
    ds.PatientName, ds.PatientID = f"ANON^{pid}", f"PM{pid}"  # pseudonymous: MedMNIST images carry no identity
    ds.PatientIdentityRemoved = "YES"
    ds.Modality, ds.ConversionType, ds.BodyPartExamined = "CR", "WSD", "CHEST"
    ds.StudyDate = ds.SeriesDate = "20000101"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{spacing_mm:g}", f"{spacing_mm:g}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_demo_dicom(npz: Path, root: Path, num_per_class: int) -> Path:
    """The first ``num_per_class`` images of each class of the npz's train split as ``root/<class>/<n>.dcm``."""
    images, labels = read_medmnist(npz, "train")  # uint8 (N, 1, 28, 28), labels (N,)
    for label, name in enumerate(CLASSES):
        idx = np.flatnonzero(labels == label)[:num_per_class]
        if len(idx) < num_per_class:
            raise ValueError(f"{npz}: only {len(idx)} training images of class {name!r}, "
                             f"asked for --num-per-class {num_per_class}.")
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in idx:
            write_dicom(root / name / f"pneumoniamnist_train_{i:05d}.dcm", images[i, 0], int(i))
    return root


# ---------------------------------------------------------------------------------------------------------------
# 2. the datalist
# ---------------------------------------------------------------------------------------------------------------
def stored_range(datalist: ImageDatalist) -> tuple[float, float]:
    """The values the DICOM files can hold: the ``BitsStored`` range (signed or not) through the modality rescale
    (``RescaleSlope``/``RescaleIntercept``), as the reader returns them; over all files. This is the window mapped to
    the model's [0, 1]: a property of the acquisition, not of the images at hand, so that an attack budget in model
    units means the same stored-value change on every image. Pass ``--window`` to choose another (a CT window in HU,
    or for NIfTI / PNG images, which carry no such header)."""
    lows, highs = [], []
    for item in datalist.items:
        path = Path(item["image"])
        if path.is_dir():  # a DICOM series: every slice shares the pixel module
            path = next(p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith("."))
        if not is_dicom_input(path):
            raise ValueError(f"{path}: not DICOM, no stored-value range in its header; pass --window LOW HIGH.")
        ds = read_dicom(path, stop_before_pixels=True)
        bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        ends = sorted((lo * slope + intercept, hi * slope + intercept))
        lows.append(ends[0])
        highs.append(ends[1])
    return min(lows), max(highs)


# ---------------------------------------------------------------------------------------------------------------
# 3./4. the bundle
# ---------------------------------------------------------------------------------------------------------------
def bundle_workflow(configs: list[str], overrides: dict[str, Any]) -> ConfigWorkflow:
    """A MONAI ``ConfigWorkflow`` over the bundle's configs (later files override earlier ones), with overrides:
    the same as ``python -m monai.bundle run --config_file "[...]" --key value ...``."""
    return ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / c) for c in configs],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type=None,  # run the config's "run" list as it is (the stages of the chained configs, in order)
        **overrides,
    )


def _quote(value: Any) -> str:
    """A shell word: as it is when plain, else in double quotes with ``\\ " $ `` escaped."""
    text = str(value)
    if re.fullmatch(r"[\w./:@=+-]+", text):
        return text
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def cli_command(configs: list[str], overrides: dict[str, Any]) -> str:
    """The equivalent ``python -m monai.bundle run`` command line (bash)."""
    files = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in configs) + "]"
    parts = ["python -m monai.bundle run --config_file", _quote(files)]
    parts += [f"--{key} {_quote(value)}" for key, value in overrides.items()]
    return " ".join(parts)


def main() -> None:
    # ---- settings: full by default, --tiny for seconds; explicit flags override both
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_num_threads_argument(parser, default=1)  # 1: the setting of the recorded runs
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dicom-dir", type=Path, help="your folder of class sub-folders of DICOM files")
    source.add_argument("--manifest", type=Path, help="your CSV manifest (columns image,label; paths relative to it)")
    parser.add_argument("--npz", type=Path, default=ROOT.parent / "shared" / "data" / "pneumoniamnist.npz",
                        help="PneumoniaMNIST .npz for the demo DICOM folder (when neither --dicom-dir nor --manifest)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "bundle_on_your_dicom")
    parser.add_argument("--tiny", action="store_true", help=f"smoke-test settings {TINY}")
    parser.add_argument("--num-per-class", type=int, help="demo: images of each class written as DICOM")
    parser.add_argument("--num-epochs", type=int, help="standard training epochs")
    parser.add_argument("--harden-epochs", type=int, help="adversarial training epochs")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--guard-eps", type=float,
                        help="L-inf budget (in 1/255 of the window) of the PGD whose images the guard is fitted on")
    parser.add_argument("--guard-fpr", type=float, help="the guard's false-positive rate on clean validation images")
    parser.add_argument("--aa-steps", type=int, help="iterations of the evaluation's AutoAttack (default: the bundle's)")
    parser.add_argument("--aa-queries", type=int, help="Square queries of the evaluation's AutoAttack (default: the bundle's)")
    parser.add_argument("--image-size", type=int, default=32, help="images are resized to this square size")
    parser.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="values mapped to [0, 1] (default: the range the DICOM files can store, e.g. 0 255 for "
                             "8 bits)")
    parser.add_argument("--classes", nargs="+", help="class names in label order (default: sorted folder names)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the bundle's, cuda when available)")
    args = parser.parse_args()
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    set_num_threads(args.num_threads)
    t0 = time.perf_counter()
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # ---- 1. the DICOM folder: yours, or the demo written from the npz
    demo = args.dicom_dir is None and args.manifest is None
    if demo:
        dicom_dir = out / "dicom"
        if dicom_dir.exists() and any(dicom_dir.iterdir()):
            raise ValueError(f"{dicom_dir} is not empty: use a fresh --output-dir for the demo "
                             "(nothing is overwritten).")
        print(f"writing {2 * args.num_per_class} PneumoniaMNIST images from {args.npz} as DICOM into {dicom_dir}")
        write_demo_dicom(args.npz, dicom_dir, args.num_per_class)
        args.dicom_dir = dicom_dir

    # ---- 2. the datalist: every image is read and checked here, so a bad file is named now and not deep inside a
    # DataLoader worker; on_error="skip" would leave bad files out and list them in datalist.skipped instead
    if args.manifest is not None:
        datalist = datalist_from_csv(args.manifest, classes=args.classes)
        source_name = str(args.manifest)
    else:
        datalist = datalist_from_folders(args.dicom_dir, classes=args.classes)
        source_name = str(args.dicom_dir)
    print(f"{len(datalist)} images, classes {datalist.class_counts()}")
    splits = datalist.split((0.7, 0.15, 0.15), seed=0)  # stratified: each class split alike
    empty = [name for name, items in splits.items() if not items]
    if empty:
        raise ValueError(f"{source_name}: too few images for a training / validation / test split (empty: {empty}).")
    window = tuple(args.window) if args.window is not None else stored_range(datalist)
    intensity_map = LinearIntensityMap.from_window(*window, units="stored value")
    # the bundle reads dataset_dir/dataset.json; it lives in the output folder, with absolute paths to your files
    dataset_dir = out / "dataset"
    datalist_path = datalist.to_json(dataset_dir / "dataset.json", intensity_map, seed=0, overwrite=True)
    print(f"datalist {datalist_path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
          + f"; window {window[0]:g}..{window[1]:g} -> [0, 1]")

    # ---- 3. train -> harden -> guard -> evaluate: one chained run of train.json + harden.json + guard.json +
    # evaluate.json (each overlay holds only its changes and appends its stage)
    # Overrides point the bundle at the datalist and keep every output under --output-dir. Your images may have
    # any size: base_transforms (the loading transforms every workflow uses) gets a resize to image_size.
    overrides: dict[str, Any] = {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(dataset_dir),
        "output_dir": str(out / "outputs"),
        "ckpt_dir": str(out / "models"),
        "num_epochs": args.num_epochs,
        "harden_epochs": args.harden_epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "base_transforms": "$list(monai_robust.data.datalist.loading_transforms('image', @intensity_map).transforms)"
                           " + [monai.transforms.Resized('image', [@image_size] * @spatial_dims)]",
    }
    if args.guard_eps is not None:  # the guard's budget, like every budget in the bundle, scales with the window
        overrides["guard_eps"] = f"${args.guard_eps:g} / 255 * (@bounds[1] - @bounds[0])"
    if args.guard_fpr is not None:
        overrides["guard_fpr"] = args.guard_fpr
    for key in ("aa_steps", "aa_queries"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.device is not None:
        overrides["device"] = f"$torch.device('{args.device}')"
    overrides["num_threads"] = args.num_threads  # the bundle's own thread setting (its default 0: the free cores)
    main_configs = ["train.json", "harden.json", "guard.json", "evaluate.json"]
    print("bundle run, equivalent command:\n  " + cli_command(main_configs, overrides))
    workflow = bundle_workflow(main_configs, overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    # ---- 4. inference with the hardened checkpoint and the fitted guard: inference.json runs on its own (the plain
    # model, models/model.pt); harden.json after it swaps in the network with blocks and models/model_hardened.pt
    infer_configs = ["inference.json", "harden.json"]
    print("inference, equivalent command:\n  " + cli_command(infer_configs, overrides))
    workflow = bundle_workflow(infer_configs, overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    # ---- 5. where everything is, and the headline numbers
    report_dir = out / "outputs" / "report"
    report = json.loads((report_dir / "robustness.json").read_text())
    predictions = out / "outputs" / "predictions.csv"
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = sum(r.get("adversarial_suspected", "").strip().lower() in ("1", "true") for r in rows)
    summary = {
        "source": source_name,
        "demo": demo,
        "tiny": args.tiny,
        "classes": datalist.classes,
        "class_counts": datalist.class_counts(),
        "splits": {k: len(v) for k, v in splits.items()},
        "intensity_window": list(window),
        "settings": {k: getattr(args, k) for k in (*FULL, "image_size")},
        "datalist": str(datalist_path),
        "checkpoint": str(out / "models" / "model_hardened.pt"),
        "guard": str(out / "models" / "guard.pt"),
        "report_json": str(report_dir / "robustness.json"),
        "report_html": str(report_dir / "index.html"),
        "tensorboard_dir": str(out / "outputs"),
        "predictions_csv": str(predictions),
        "num_predictions": len(rows),
        "num_flagged_by_guard": flagged,
        "prediction_columns": list(rows[0]) if rows else [],
        "clean_accuracy": report["clean"]["accuracy"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "bundle_on_your_dicom.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nclean accuracy on the {summary['splits']['test']} test images: {summary['clean_accuracy']:.3f}")
    print(f"robustness report:  {summary['report_html']}  (every number: {summary['report_json']})")
    print(f"hardened checkpoint: {summary['checkpoint']}, detector guard: {summary['guard']}")
    print(f"predictions:        {predictions} ({len(rows)} images, {flagged} flagged by the guard; columns "
          f"{summary['prediction_columns']})")
    print(f"TensorBoard:        tensorboard --logdir {summary['tensorboard_dir']}")
    print(f"summary:            {out / 'bundle_on_your_dicom.json'} ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
