"""What a photo that is not a cat or a dog looks like instead, in a plain word.

The bundle's ``looks_like`` output is the index of the ImageNet head's best class that is not a cat
or a dog; ``imagenet_words.tsv`` (shipped with the package) maps it to the word a user reads
("horse" for ImageNet's "sorrel", "person" for "sweatshirt", "bird" for "brambling") and to a coarse
kind (animal, person, object, food, plant, scene) that metrics can count without exploding labels.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import NamedTuple

KINDS = ("pet", "animal", "person", "object", "food", "plant", "scene")


class ImageNetClass(NamedTuple):
    name: str  # ImageNet's own (WordNet) name, e.g. "sorrel"
    word: str  # what a user reads, e.g. "horse"
    kind: str  # one of KINDS


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    text = files("catsdogs.inference").joinpath("imagenet_words.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    classes = tuple(ImageNetClass(name, word, kind) for _, name, word, kind in rows)
    if len(classes) != 1000 or any(c.kind not in KINDS for c in classes):
        raise ValueError("imagenet_words.tsv must list the 1,000 ImageNet classes with a known kind each")
    return classes


def looks_like(index: int) -> ImageNetClass:
    """The ImageNet class at ``index`` (0-999). Raises ``IndexError`` outside that range."""
    if not 0 <= index < 1000:
        raise IndexError(f"ImageNet class index {index} is outside 0-999")
    return imagenet_classes()[index]
