"""Front-ends: log-mel (nnAudio) with log compression; patches (chunking) and the feature cache."""

from asc_search.frontends._features import ClipFeatures, FeatureCache, PatchLayout, compute_clip_features
from asc_search.frontends._logmel import LogMel, LogMelConfig

__all__ = ["ClipFeatures", "FeatureCache", "LogMel", "LogMelConfig", "PatchLayout", "compute_clip_features"]
