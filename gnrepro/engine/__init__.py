"""Running a model: the step loop, execution settings (precision, compile, layout), torch.distributed
and the per-worker BN rule across processes, the paper's optimizer and schedule, checkpoints,
preemption signals, the per-layer probe, loggers and throughput measurement."""
