"""Datasets and input pipelines.

Light modules (NumPy/SciPy/PIL only, no TensorFlow): `config` (the data config schema),
`conditions` (colour coding, sketch distance, depth/normal rendering, null condition, reading
user condition files), `shapes_scenes` (the built-in dataset's generator, classes and palette),
`degradations` (BSRGAN-light low-res inputs, 8-bit quantisation), `edges` (Canny-style sketches),
`tokenizer` (byte-level and GPT-2 BPE). `hed` runs HED edge detection in JAX.
`pipeline` builds grain iterators over tfds ArrayRecord data sources; `datasets` maps a data config
to its tfds builder in `builders` (TensorFlow Datasets is imported only there) and prepares it;
`python -m piti_jax.data` prepares a dataset from the command line.
"""
