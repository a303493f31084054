"""sharp_fpn."""
