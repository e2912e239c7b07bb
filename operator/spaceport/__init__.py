"""Spaceport: drone photos to compressed 3D Gaussian Splats, on Kubernetes or one machine."""
