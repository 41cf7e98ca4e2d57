"""Seeded data generators. Every function takes the generator it draws from; none touches global RNG.

Public names:

- :class:`TeacherPair`, :func:`teacher_pair` -- unit source/target teachers at angle theta
- :func:`linear_regression_data` -- Gaussian inputs and noisy linear labels, (instances, n, d)
- :func:`standard_normal`, :data:`RandomSource` -- float64 normal draws from a torch or numpy generator
- :func:`load_dataset`, :class:`ImageDataset`, :class:`LabelHierarchy` -- real image data (MNIST, Fashion-MNIST,
  Animal-MNIST, digits, the 30-class union) with label hierarchies; :func:`class_balanced_subset` (see
  :mod:`transferlab.tasks.images`)
- :func:`parse_label_function`, :func:`relabel`, :func:`pca` -- fine, coarse, k-means (aligned with
  the hierarchy or global) and random labels of real images (see :mod:`transferlab.tasks.relabel`)
- :func:`load_corpus`, :class:`TextCorpus`, :func:`encode`, :func:`decode` -- English prose and Python source as
  byte-level token streams split by file (see :mod:`transferlab.tasks.text`)
"""

from transferlab.tasks._random import RandomSource, standard_normal
from transferlab.tasks.images import (
    DATASET_NAMES,
    GROUPINGS,
    ImageDataset,
    LabelHierarchy,
    class_balanced_indices,
    class_balanced_subset,
    load_dataset,
    split_dataset_name,
    static_hierarchy,
)
from transferlab.tasks.relabel import (  # label functions on real images: fine, coarse, k-means, random
    LabelFunction,
    aligned_cluster_counts,
    parse_label_function,
    pca,
    relabel,
)
from transferlab.tasks.hidden_manifold import (  # correlated hidden-manifold tasks (see its module docstring)
    HiddenManifoldPair,
    HiddenManifoldTask,
    correlated_pair,
    hidden_manifold_data,
    hidden_manifold_pair,
    hidden_manifold_task,
    perturbed_task,
)
from transferlab.tasks.linear import TeacherPair, linear_regression_data, teacher_pair
from transferlab.tasks.multiview import (  # hierarchical multi-view data and label maps (see its module docstring)
    LABEL_MAPS,
    LabelMap,
    MultiViewData,
    MultiViewFeatures,
    aligned_label_map,
    coarse_label_map,
    fine_label_map,
    global_label_map,
    label_map,
    multiview_data,
    multiview_features,
    random_label_map,
)
from transferlab.tasks.text import (  # byte-level text corpora (see its module docstring)
    CORPUS_NAMES,
    VOCAB_SIZE,
    TextCorpus,
    decode,
    encode,
    file_split,
    load_corpus,
    rest_prose,
)

__all__ = [
    "CORPUS_NAMES",
    "VOCAB_SIZE",
    "TextCorpus",
    "decode",
    "encode",
    "file_split",
    "load_corpus",
    "rest_prose",
    "LABEL_MAPS",
    "LabelMap",
    "MultiViewData",
    "MultiViewFeatures",
    "aligned_label_map",
    "coarse_label_map",
    "fine_label_map",
    "global_label_map",
    "label_map",
    "multiview_data",
    "multiview_features",
    "random_label_map",
    "HiddenManifoldPair",
    "HiddenManifoldTask",
    "correlated_pair",
    "hidden_manifold_data",
    "hidden_manifold_pair",
    "hidden_manifold_task",
    "perturbed_task",
    "DATASET_NAMES",
    "GROUPINGS",
    "LabelFunction",
    "aligned_cluster_counts",
    "parse_label_function",
    "pca",
    "relabel",
    "static_hierarchy",
    "ImageDataset",
    "LabelHierarchy",
    "RandomSource",
    "TeacherPair",
    "class_balanced_indices",
    "class_balanced_subset",
    "linear_regression_data",
    "load_dataset",
    "split_dataset_name",
    "standard_normal",
    "teacher_pair",
]
