"""A pass on the CPU: in this process, as ``T2T_ViT_infer.py`` with the same options runs it, or one process per
device with ``--device 0,1``."""

from __future__ import annotations

from pathlib import Path

from t2t_vit.job.invocation import Invocation
from t2t_vit.job.plan import Pass
from t2t_vit.job.request import JOB_NAME, JobError
from t2t_vit.job.stamps import read_json
from t2t_vit.progress import plural


def run_on_cpu(item: Pass, job, invocation: Invocation, state, resume: bool) -> float | None:
    """One pass in this process, as `T2T_ViT_infer.py <the same options> --backend B [--resume]` would run it;
    with several devices, one process per device as `... --device 0,1 --divide_input true` runs it (returns the
    devices' images per wall-clock second together; else None)."""
    from t2t_vit.runtime.runner import run_inference

    emulation = item.kind == "emulation"
    precision = ["--precision", "npu-fp16", "--keep-dtype", str(item.keep_dtype)] if emulation else []
    argv = ["T2T_ViT_infer.py", *invocation.arguments(), "--backend", item.runner, *precision,
            *(["--resume"] if resume else [])]
    run = dict(invocation.runner_options(), backend_name=item.runner,
               options={"job": JOB_NAME, "kind": item.kind, "batch": item.batch, "threads": job.request.threads,
                        "devices": job.device_list},
               precision="npu-fp16" if emulation else "fp32", keep_dtype=str(item.keep_dtype) if emulation else None,
               resume=resume)
    if job.device_list:
        return run_on_devices(item, job, invocation, argv, run)
    result = run_inference(threads=job.request.threads, progress=job.request.progress, on_progress=state.on_progress,
                           argv=argv, **run)
    runner = (read_json(result.summary_path) or {}).get("cpu_runner", {})
    computed = runner.get("resume", {}).get("computed_samples", item.images)
    print(pass_summary(item, result.compute_ms, result.throughput, computed))
    return None


def run_on_devices(item: Pass, job, invocation: Invocation, argv: list[str], run: dict) -> float | None:
    """One process per device, each with its share of the bins (or all of pure inference) and of the cores."""
    from t2t_vit.runtime.multidevice import run_devices, wall_rate
    from t2t_vit.runtime.batching import RunnerError

    devices, inputs = job.device_list, run.pop("inputs")
    argv = [*argv, "--device", ",".join(map(str, devices)), *(["--divide_input", "true"] if inputs else [])]
    for name in ("output", "output_dirname"):
        run.pop(name)
    try:
        runs = run_devices(devices, bool(inputs), inputs, str(invocation.output), invocation.output_dirname,
                           job.request.threads, {**run, "argv": argv, "progress": False}, start_method="spawn")
    except RunnerError as error:
        raise JobError(f"{item.kind} at batch {item.batch} on devices {','.join(map(str, devices))}: {error}") \
            from error
    wall = wall_rate(runs)
    for device_run in runs:
        images = device_run.inputs if inputs else device_run.timed_samples
        print(f"device {device_run.device}: {images} images, {device_run.throughput:.1f} "
              f"images/s ({Path(device_run.result_dir).name if device_run.result_dir else 'no output'})")
    print(f"{item.kind} at batch {item.batch} on {len(devices)} devices: {sum(r.throughput for r in runs):.1f} "
          f"images/s summed over the devices (ais_bench's summary throughput), {wall or 0:.1f} images/s of wall "
          f"clock together")
    return wall


def pass_summary(item: Pass, compute_ms: list[float], throughput: float, computed: int) -> str:
    """One line on what a CPU pass measured, in the job's words (ais_bench's own lines are the runner's):
    ``computed`` images were inferred by this run (the rest, if any, reused from an interrupted one)."""
    if item.kind == "throughput":
        return (f"throughput at batch {item.batch}: {throughput:.1f} images/s (pure inference: 1000 x batch / mean "
                f"time of one batch over {len(compute_ms)} timed runs)")
    seconds, padded = sum(compute_ms) / 1000, len(compute_ms) * item.batch - computed
    reused = f" ({item.images - computed} reused from the interrupted run)" if computed < item.images else ""
    batches = plural(len(compute_ms), "batch", "batches")
    line = (f"{plural(computed, 'image')}{reused} in {batches} of {item.batch}: {seconds:.1f} s of inference, "
            f"{computed / seconds if seconds else 0:.1f} images/s")
    if padded > 0:
        line += (f"; the last batch was padded with {plural(padded, 'copy', 'copies')} (as ais_bench pads; they are "
                 f"not scored), so the "
                 f"model itself ran at {throughput:.1f} images/s")
    return line


