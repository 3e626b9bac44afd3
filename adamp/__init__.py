"""AdamP and SGDP optimizers for PyTorch: the reference release's numbers, without host syncs.

``from adamp import AdamP, SGDP`` gives drop-in ``torch.optim`` optimizers with the arguments
and defaults of ``adamp==0.3.0`` (Heo et al., ICLR 2021), a multi-tensor path, and
diagnostics of which weights were treated as scale-invariant; ``adamp.functional.adamp``
and ``adamp.functional.sgdp`` are their steps over plain tensor lists.
"""

from adamp import functional
from adamp._projection import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION
from adamp.adamp import AdamP
from adamp.sgdp import SGDP

__all__ = ["CHANNEL_VIEW", "LAYER_VIEW", "NO_PROJECTION", "SGDP", "AdamP", "functional"]
__version__ = "0.1.0"
