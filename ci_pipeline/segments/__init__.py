"""The segments stage: rules parsed into typed trees and evaluated with shared pandas masks (pure pandas)."""

from ci_pipeline.segments.membership import membership_table
from ci_pipeline.segments.run import Reuse, SegmentInputs, SegmentRun, evaluate_segments

__all__ = ["Reuse", "SegmentInputs", "SegmentRun", "evaluate_segments", "membership_table"]
