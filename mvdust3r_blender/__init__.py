"""MV-DUSt3R+ for Blender: unposed photos in, points, cameras and Gaussians out.

This package is imported by two processes: Blender (the add-on) and the worker (``engine``,
with torch and without bpy). So nothing here imports bpy at import time; ``register()`` does.
"""
