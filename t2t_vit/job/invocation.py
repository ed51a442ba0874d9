"""One pass described once, rendered to each consumer: ais_bench's argument list or the CPU runner's options.

ais_bench and the CPU runner (``T2T_ViT_infer.py``) take the same options; an :class:`Invocation` holds their
values and renders them, so nothing is ever parsed back out of an argument list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Invocation:
    """The options of one ais_bench (or CPU runner) run: the model, the bins (None: pure inference), where the
    results go (``output/output_dirname``), batch size, timed runs, warm-up runs and the gear of a dynamic .om."""

    model: Path
    inputs: Path | None
    output: Path
    output_dirname: str
    batch: int
    loop: int
    warmup: int
    gear: int | None = None  # --dymBatch, for a dynamic-batch .om
    outfmt: str = "BIN"

    def arguments(self) -> list[str]:
        """ais_bench's spelling (the CPU runner takes it as well)."""
        return ["--model", str(self.model), *(["--input", str(self.inputs)] if self.inputs is not None else []),
                "--output", str(self.output), "--output_dirname", self.output_dirname, "--outfmt", self.outfmt,
                "--batchsize", str(self.batch), "--loop", str(self.loop), "--warmup_count", str(self.warmup),
                *(["--dymBatch", str(self.gear)] if self.gear else [])]

    def runner_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`t2t_vit.runtime.runner.run_inference` for the same run."""
        return dict(model=str(self.model), inputs=[str(self.inputs)] if self.inputs is not None else None,
                    output=str(self.output), output_dirname=self.output_dirname, outfmt=self.outfmt,
                    batchsize=self.batch, loop=self.loop, warmup_count=self.warmup)

    def for_share(self, inputs: Path | None, output: Path, output_dirname: str) -> Invocation:
        """The same run on another set of inputs into another folder (one chip's share of the bins)."""
        return replace(self, inputs=inputs, output=output, output_dirname=output_dirname)
