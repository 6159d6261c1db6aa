"""The reconstruction engine: network, checkpoints, preprocessing, cameras, exports, worker.

Runs in the worker's own Python (torch installed there); never imports bpy.
"""
