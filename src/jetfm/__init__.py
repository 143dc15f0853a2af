"""jetfm: foundation models for particle-physics jets.

Layers, each importing only from those after it:
cli -> evaluate -> train -> tasks -> models, tokenizers -> nn -> data -> physics -> core.
"""

__version__ = "0.1.0"
