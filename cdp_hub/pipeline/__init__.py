"""The pipeline: the stages, their runner and the one place that builds and runs them."""

from cdp_hub.pipeline.stage import Stage, StageOutput, StageRunner

__all__ = ["Stage", "StageOutput", "StageRunner"]
