"""The two networks hemolab teaches, and what turns their logits into probabilities.

* :class:`CNNDS` -- Arab et al. 2020 (docs/methods.md §1.3): a 3D U-Net with residual context modules
  and deep supervision on the whole head (128x128x64).
* :class:`Patel3DCNN` -- Patel et al. 2019 (docs/methods.md §2.3): a valid-convolution 3D U-Net on
  124^3 patches.

Which network a checkpoint holds, and how it is trained and applied, is the registry's business:
:data:`hemolab.architectures.ARCHITECTURES`.
"""

from hemolab.models.cnnds import CNNDS
from hemolab.models.inference import center_crop, fast_inference_context, foreground_probability, predict
from hemolab.models.patel import Patel3DCNN

__all__ = [
    "CNNDS",
    "Patel3DCNN",
    "center_crop",
    "fast_inference_context",
    "foreground_probability",
    "predict",
]
