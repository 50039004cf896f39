"""SyntheticStreets: the embedded default dataset, a procedural street-scene generator.

Every sample is a street seen from a car, rendered with a pinhole camera: a horizon line, a
road converging to a vanishing point, pavements on both sides, building facades (with windows
and shop fronts) that run along the street and sometimes close it at the far end, and - sorted by
depth and painted far to near - trees, poles with signs, street lights and traffic lights,
fences, parked and moving cars, pedestrians, bicyclists and unlabelled clutter. Sizes follow the
perspective (``1 / depth``), so objects shrink toward the horizon and near ones occlude far ones.
The 11 classes and display colours are CamVid's; 255 marks void (rough borders of some objects
and clutter such as bins), a few percent of the pixels at most.

Why it separates architectures instead of being solved by a colour lookup:

* Thin structures: poles are 1-3 px wide at 128x160, fence rails and posts and bicycle wheels
  are one pixel, so a network that throws resolution away early loses them.
* Context, not colour, tells the big regions apart: sky, road, pavement and building all draw
  from overlapping grey/beige ranges (overcast sky vs concrete road, facades and pavements from
  one material palette, car windows that reflect the sky); what decides is position relative
  to the horizon and the road edges, perspective, and the surroundings.
* Shared colours between object classes: cars, signs, fences and clothes use one palette.
* Per-image exposure, white balance, gamma, shadows cast across the street, vignetting, sensor
  noise and textures (windows, leaf noise with holes, lane markings, paving slabs).

A test fits the best "quantized RGB -> majority class" table on training samples; on validation
samples it stays far below what a segmentation network reaches (see tests/test_synthetic.py).

Samples are deterministic functions of ``(seed, split, index)``; all scene parameters are drawn
before any pixel is touched, so one sample shows the same scene at every ``size``. Splits use
disjoint seed streams. Rendering is vectorized numpy: about 5-10 ms per 128x160 sample on one
CPU core, so the demo can train on freshly generated data.

Modules: ``classes`` (labels), ``scene`` (random scene parameters), ``canvas`` (raster primitives),
``background`` and ``objects`` (painting), ``render`` (one sample, camera effects), ``dataset``
(``SyntheticStreets``).
"""

from __future__ import annotations

from segnas.data.synthetic.classes import POLE
from segnas.data.synthetic.dataset import SyntheticStreets

__all__ = ["POLE", "SyntheticStreets"]
