"""Running the model: the inference engine every front end uses (:mod:`.engine`), which
device (:mod:`.devices`), scoring across ``torchrun`` ranks (:mod:`.sharding`), explanations
in adjectives (:mod:`.explain`) and zero-shot CLIP scoring (:mod:`.zero_shot`).

The ``bpclip`` command itself is :mod:`bpclip_core.cli`.
"""
