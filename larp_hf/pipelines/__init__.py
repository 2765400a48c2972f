from .pipeline_larp import LarpPipeline, LarpPipelineOutput, check_pair, image_grid, set_sampling_defaults


__all__ = ["LarpPipeline", "LarpPipelineOutput", "check_pair", "image_grid", "set_sampling_defaults"]
