"""SfM stage (pycolmap): ``run_sfm`` turns photos into an undistorted, georeferenced COLMAP model."""

from spaceport.stages.sfm.stage import run_sfm

__all__ = ["run_sfm"]
