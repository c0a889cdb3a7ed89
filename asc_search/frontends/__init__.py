"""Front-ends: log-mel, gammatone and CQT (nnAudio), deltas, the DeepSpectrumLite colour-map image; patches
(chunking) and the feature cache. A front-end kind is one registered ``Frontend`` subclass
(``register_frontend`` / ``unregister_frontend``); the space, the features and ``frontend.json`` ask the
registry."""

from asc_search.frontends._features import (
    ClipFeatures,
    FeatureCache,
    PatchLayout,
    add_deltas,
    compute_clip_features,
)
from asc_search.frontends._image import ColourMapImage, spectrogram_to_image
from asc_search.frontends._registry import (
    CONFIG_FIELDS,
    DERIVED_FIELDS,
    FRONTENDS,
    CQTFrontend,
    Deltas,
    Frontend,
    FrontendConfig,
    GammatoneFrontend,
    LogMelFrontend,
    build_frontend,
    compute_deltas,
    frontend_class,
    list_frontends,
    register_frontend,
    unregister_frontend,
)

__all__ = [
    "CONFIG_FIELDS",
    "DERIVED_FIELDS",
    "FRONTENDS",
    "CQTFrontend",
    "ClipFeatures",
    "ColourMapImage",
    "Deltas",
    "FeatureCache",
    "Frontend",
    "FrontendConfig",
    "GammatoneFrontend",
    "LogMelFrontend",
    "PatchLayout",
    "add_deltas",
    "build_frontend",
    "compute_clip_features",
    "compute_deltas",
    "frontend_class",
    "list_frontends",
    "register_frontend",
    "spectrogram_to_image",
    "unregister_frontend",
]
