"""Infrastructure shared by every layer: errors, typed configs, atomic file writes, checkpoint folders.

``core`` imports nothing else from jetfm, so every other module may import it.
"""
