"""What the user asked the main job for (``T2T_ViT_eval.py``'s options), as one immutable request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from t2t_vit import ToolkitError

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DEFAULT_LOOP = 6        # timed runs per batch size: a multiple of the runner's default streams (one per core)
DEMO_LOOP = 2
CPU_PERFORMER = "matmul"  # the fastest CPU form (docs/performance.md); the NPU takes the sum form
NPU_PERFORMER = "sum"
DEMO_NOTE = "DEMO: random weights and synthetic images, the accuracy means nothing"
DEMO_ROOM = "demo"  # the demo's work dir, inside --work-dir: it never touches a real run's files
DEMO_MARKER = "DEMO.txt"
VARIANT_SUMMARY = "eval_summary_{}.json"  # each variant's own, kept beside the others' (read by the family table)
JOB_NAME = "T2T_ViT_eval.sh"  # how the files the job writes name what made them


class JobError(ToolkitError):
    """The main job cannot go on."""


@dataclass(frozen=True)
class JobRequest:
    """The main job as the user asked for it; :func:`t2t_vit.job.resolve.resolve` turns it into a resolved job.

    ``work_dir`` is where everything goes (the demo's: ``--work-dir``/demo). ``devices`` is ``--device``;
    ``backend`` the CPU runtime asked for (None: the default where a CPU pass runs).
    """

    pth_path: Path | None
    data_dir: Path | None  # a folder or a tar archive (t2t_vit.data.sources)
    work_dir: Path
    batch_sizes: list[int]
    label_file: Path | None = None  # the labels of flat images (t2t_vit.data.labels), or
    devkit: Path | None = None  # the ILSVRC2012 devkit
    class_list: Path | None = None
    backend: str | None = None
    loop: int = DEFAULT_LOOP
    om_dir: Path | None = None
    demo: bool = False
    demo_images: int = 16
    accuracy_batch: int | None = None
    accuracy_all: bool = False
    skip_bad: bool = False
    workers: int | None = None
    threads: int | None = None
    progress: bool | None = None
    emulate_npu: bool = False
    dtype: str = "uint8"  # of the bins: uint8 (the cropped image, normalised in the model) or float32 (ModelZoo)
    allow_constant: bool = False  # score result sets that are mostly constant or one same vector (data.metrics)
    model: str | None = None  # --model: the variant the checkpoint must be (the demo's variant)
    devices: list[int] | None = None  # --device: the chips (or, on the CPU, device processes) every pass uses

    @property
    def device_list(self) -> list[int] | None:
        """The devices of a multi-device run (two or more), else None."""
        return list(self.devices) if self.devices and len(self.devices) > 1 else None
