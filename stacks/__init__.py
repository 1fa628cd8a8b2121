"""One CDK stack per file: storage, processing, gpu_workers, orchestration (see ../shared/DESIGN.md)."""
