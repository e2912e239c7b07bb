"""The Reconstruction API (spaceport.dev/v1alpha1): the single source of the CRD and of stage options."""

from spaceport.api.common import (
    ApiModel,
    Resources,
    StageScheduling,
    StatusModel,
    Toleration,
    describe_validation_error,
)
from spaceport.api.compress import CompressOptions
from spaceport.api.reconstruction import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    STAGES,
    VERSION,
    Condition,
    Location,
    Metrics,
    Phase,
    Reason,
    ReconstructionSpec,
    ReconstructionStatus,
    StageStatus,
    is_s3_uri,
)
from spaceport.api.sfm import SfmOptions
from spaceport.api.train import TrainOptions

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "STAGES",
    "VERSION",
    "ApiModel",
    "CompressOptions",
    "Condition",
    "Location",
    "Metrics",
    "Phase",
    "Reason",
    "ReconstructionSpec",
    "ReconstructionStatus",
    "Resources",
    "SfmOptions",
    "StageScheduling",
    "StageStatus",
    "StatusModel",
    "Toleration",
    "TrainOptions",
    "describe_validation_error",
    "is_s3_uri",
]
