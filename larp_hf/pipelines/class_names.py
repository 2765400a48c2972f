"""Class names of a class-conditional prior: read from its config's `id2label` (the standard transformers field, the
one place they are kept; `train_prior.py` fills it from a dataset's `ClassLabel` names), and the names in a request
turned into the class indices the prior's class tokens are built from."""

import re

import torch

from ..prior import NULL_CLASS


# transformers fills `id2label` with these when nobody names the labels (two of them, whatever the class count).
_DEFAULT_LABEL = re.compile(r"^LABEL_(\d+)$")


def prior_class_names(config) -> list[str] | None:
    """
    The names of a prior's classes by index, from `config.id2label`, or `None` when it names none: an unconditional
    prior, transformers' default `id2label` (`LABEL_0`, `LABEL_1`, ...: a prior saved before `prior_config` named
    classes), or names that are the indices themselves (`"0"`, `"1"`, ...: a prior trained on integer labels). Names
    that do not fit the prior (another count than its `num_classes`, a name twice) raise a `ValueError`.
    """
    num_classes = (getattr(config, "larp", None) or {}).get("num_classes", 0)
    id2label = getattr(config, "id2label", None) or {}
    if num_classes == 0:
        return None
    names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if all(_DEFAULT_LABEL.match(name) and int(_DEFAULT_LABEL.match(name)[1]) == i for i, name in enumerate(names)):
        return None
    if names == [str(i) for i in range(num_classes)]:  # `prior_config` without class names: the indices themselves
        return None
    if sorted(int(key) for key in id2label) != list(range(num_classes)):
        raise ValueError(
            f"The prior has {num_classes} classes but its config's `id2label` names {len(names)} ({names}): set one "
            f"name for each class index 0…{num_classes - 1} in the prior's config.json (`id2label`), or remove "
            "`id2label` to use class indices."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"The prior's config names two classes alike ({repeated}) in `id2label`; give each its own.")
    return names


def class_indices(class_labels, names: list[str] | None, num_classes: int):
    """
    `class_labels` (as `LarpPipeline.__call__` takes them) with every class name replaced by its index in `names`;
    indices, `None`, `"null"` (the null class) and tensors pass unchanged, a list stays a list. A string of digits that
    names no class is read as an index (what a command line passes). An unknown name raises a `ValueError` listing the
    prior's names. `num_classes` 0 (an unconditional prior) leaves everything to the prior's own checks.
    """
    if num_classes == 0 or class_labels is None or isinstance(class_labels, torch.Tensor):
        return class_labels
    if isinstance(class_labels, str):
        return class_labels if class_labels == NULL_CLASS else _class_index(class_labels, names, num_classes)
    if isinstance(class_labels, (list, tuple)):
        return [_class_index(label, names, num_classes) if isinstance(label, str) else label for label in class_labels]
    return class_labels


def _class_index(name: str, names: list[str] | None, num_classes: int) -> int:
    if names is not None and name in names:
        return names.index(name)
    if name.strip().isdigit():
        return int(name)
    if names is None:
        raise ValueError(
            f"`class_labels` names a class {name!r}, but this prior's classes have no names (its config's `id2label` "
            f"is transformers' default, LABEL_0, ...): pass class indices 0…{num_classes - 1}, None (every class in "
            f"turn) or {NULL_CLASS!r} (the null class), or name the classes in the prior's config.json (`id2label`)."
        )
    raise ValueError(
        f"`class_labels`: {name!r} is not a class of this prior. Its classes are {', '.join(map(repr, names))} "
        f"(or their indices 0…{num_classes - 1}); or pass None (every class in turn) or {NULL_CLASS!r} (the null "
        "class)."
    )


def class_name(names: list[str] | None, index: int) -> str:
    """How a class is shown to a user: its name, or its index when the prior names none."""
    return str(index) if names is None else names[index]


__all__ = ["class_indices", "class_name", "prior_class_names"]
