"""The audit shape shared by image datasets and image-text pairs: reference a version, score it, find, summarise.
Steps, pipelines and the CLI call these, never each other.

- `references`: `DatasetRef`, one reference type that reopens a dataset version (images or pairs) anywhere.
- `image_audit`: the encoder, the Influence-SSL scores and the findings of an image dataset version.
- `pair_audit`: the ECIF misalignment scores of a version of image-text pairs.
"""
