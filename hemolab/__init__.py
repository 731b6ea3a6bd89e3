"""hemolab: segmenting and measuring brain haemorrhage in non-contrast head CT.

A teaching package that backs the notebooks in ``notebooks/``. It reproduces two papers:

* **CNN-DS** -- Arab et al., *Sci Rep* 10:19389 (2020): a 3D U-Net with residual context modules
  and deep supervision on whole heads resampled to 128x128x64.
* **Patel 3D CNN** -- Patel et al., *Sci Rep* 9:17858 (2019): a valid-convolution 3D U-Net on 124^3
  patches giving 36^3 outputs, with weight-map class balancing and tiled inference.

Conventions used everywhere in hemolab:

* A volume as a NumPy array is indexed ``[x, y, z]`` (the papers' "128x128x64" reads directly), and a
  ``spacing`` tuple is ``(sx, sy, sz)`` in millimetres in the same order. Use
  :func:`hemolab.io.array_from_image` / :func:`hemolab.io.image_from_array` to cross to SimpleITK,
  whose own arrays are ``[z, y, x]``.
* Intensities are Hounsfield units (HU) until a preprocessing step says otherwise.
* Every output goes to the workspace folder (:func:`hemolab.config.workspace_dir`).
"""

from hemolab.errors import HemolabError

__version__ = "0.1.0"

__all__ = ["HemolabError", "__version__"]
