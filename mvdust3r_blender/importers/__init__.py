"""Blender glue that turns a bundle's arrays into objects: points, cameras, Gaussians, and the
import as a whole (a new collection, rolled back completely if any part fails)."""
