"""Datasets and input pipelines.

Light modules (NumPy only): `conditions`, `shapes_scenes`, `degradations`, `tokenizer`.
`pipeline` builds grain iterators over tfds ArrayRecord data sources; `builders` holds the tfds
dataset builders (TensorFlow Datasets is imported only when a builder is needed).
"""
