"""Running a model on clips and videos: sliding windows and spatial tiles (:mod:`.upscale`), the memory budget
that picks a tile size (:mod:`.memory_budget`), compilation (:mod:`.compiled`) and operation counts
(:mod:`.flops`)."""

from reference_models.inference.compiled import compile_model
from reference_models.inference.upscale import minimum_tile, upscale_clip, upscale_frames

__all__ = ["compile_model", "minimum_tile", "upscale_clip", "upscale_frames"]
