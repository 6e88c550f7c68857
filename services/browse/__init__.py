"""Queries and computation behind the dashboard: everything a page shows comes from here, as plain data.

The Streamlit pages in ``dashboard/`` only lay these results out; they hold no SQL and no torch. Each
function takes :class:`~services.settings.PlatformSettings` and/or an open
:class:`~services.featurestore.FeatureStore`, so it runs the same from a page, a test or a notebook.

* :mod:`~services.browse.overview` - counts, datasets, model versions, pipeline runs
* :mod:`~services.browse.thumbnails` - stored images -> contrast-stretched, coloured thumbnails
* :mod:`~services.browse.projection` - UMAP / PCA maps, cached on disk per (level, model version)
* :mod:`~services.browse.similarity` - top-k neighbours with plate/compound/MoA filters, uploads
* :mod:`~services.browse.benchmarks` - suite scores from the results JSON and MLflow
* :mod:`~services.browse.batch` - before / after sphering, per plate
* :mod:`~services.browse.reconstruction` - original / masked / reconstructed with the champion U-Net
"""

from services.browse.errors import BrowseError, expected_errors, explain

__all__ = ["BrowseError", "expected_errors", "explain"]
