"""The pipeline: what a stage is, how a stage runs, and (in :mod:`cdp_hub.pipeline.build`) the stages
assembled from the hub's clients.

    stage.py    Stage (decode ─▶ process), StageContext, StageOutput, the one dead-letter policy
    runner.py   StageRunner: poll ─▶ handle ─▶ publish ─▶ commit, retries, the dead-letter halt
    build.py    STAGE_NAMES, build_stage(hub, name), Pipeline(hub).run() / drain() / stop()

``build`` imports every stage and every stage imports ``stage``, so this package re-exports only the kit.
"""

from cdp_hub.pipeline.runner import StageHalted, StageRunner
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput

__all__ = ["Decoded", "Stage", "StageContext", "StageHalted", "StageOutput", "StageRunner"]
